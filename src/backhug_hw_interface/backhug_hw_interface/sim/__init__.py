"""MuJoCo simulation of the BackHug device with a simulated user lying on it (no rclpy).

``DeviceSimulation`` drives the device like the motor board does (position targets, enable flags,
tip loads); ``SimulatedUser`` describes the back it works on (config/sim_users/*.yaml). Both the
``mujoco`` backend and the board emulator use them; see docs/architecture.md.
"""

from backhug_hw_interface.sim.device import FAULT_KINDS, DeviceSimulation
from backhug_hw_interface.sim.model import ServoParameters
from backhug_hw_interface.sim.user import (
    Destiffening,
    SimulatedUser,
    SimulatedUserError,
    StiffSegment,
    destiffened_stiffness,
)

__all__ = [
    'FAULT_KINDS',
    'Destiffening',
    'DeviceSimulation',
    'ServoParameters',
    'SimulatedUser',
    'SimulatedUserError',
    'StiffSegment',
    'destiffened_stiffness',
]
