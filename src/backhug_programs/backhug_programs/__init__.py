"""BackHug treatment programs: YAML schema and library, spine model, program compiler and the
program sequencer action server.
"""
