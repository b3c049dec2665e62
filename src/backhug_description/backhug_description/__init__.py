"""BackHug device description: parametric xacro/URDF with its ros2_control block, geometry and
limits config, RViz config, Gazebo world, and a Python API to load it.
"""
