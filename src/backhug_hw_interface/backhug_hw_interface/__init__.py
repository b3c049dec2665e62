"""BackHug hardware node: MuJoCo simulation, motor board over serial (with its protocol and
emulator), and a ros2_control bridge behind one lifecycle node.
"""
