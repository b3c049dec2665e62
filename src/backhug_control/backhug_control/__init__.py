"""BackHug per-finger admittance force controllers with their host node, and the independent safety
monitor.
"""
