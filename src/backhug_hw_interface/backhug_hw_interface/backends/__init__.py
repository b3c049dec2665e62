"""Hardware backends of hw_interface: MuJoCo simulation, motor board over serial, ros2_control."""
