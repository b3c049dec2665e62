"""BackHug bringup: launch files, system parameter files, the backhug command (run, programs,
report, spinemap, history) and the session recorder.
"""
