"""The interface every hardware backend implements, and the state it reports.

A backend owns one device (simulated or real) and knows nothing of ROS: hw_interface calls
``open``, then every control cycle ``write`` (targets), ``step`` (simulated time only) and
``read`` (state), and ``close`` at the end. Keeping rclpy out of here lets every backend be
tested as plain Python and exercised by the board emulator and benchmarks alike.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


class BackendError(RuntimeError):
    """The backend cannot reach or drive its device (message says what and why)."""


@dataclass
class HardwareState:
    """One sample of the device's state, arrays in the joint order given to the backend."""

    stamp_s: float
    position_m: np.ndarray
    velocity_m_s: np.ndarray
    effort_n: np.ndarray  # load at the tip, + = pushing on the user
    link_ok: bool = True
    estop: bool = False
    board_faults: int = 0  # backhug_interfaces/HardwareStatus FAULT_* bits
    finger_faults: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    fault_messages: list[str] = field(default_factory=list)
    frames_rx: int = 0
    frames_tx: int = 0
    crc_errors: int = 0
    timeouts: int = 0

    @classmethod
    def zeros(cls, joint_count: int, stamp_s: float = 0.0, link_ok: bool = False) -> HardwareState:
        """A state of ``joint_count`` retracted, unloaded joints."""
        return cls(
            stamp_s=stamp_s,
            position_m=np.zeros(joint_count),
            velocity_m_s=np.zeros(joint_count),
            effort_n=np.zeros(joint_count),
            link_ok=link_ok,
            finger_faults=np.zeros(joint_count, dtype=np.uint32),
        )


class Backend(abc.ABC):
    """A device hw_interface can drive: configured with joint names, driven with targets."""

    #: Simulated time in seconds for simulators, None for real hardware (wall time applies).
    sim_time_s: float | None = None

    def __init__(self, joint_names: list[str]) -> None:
        self.joint_names = list(joint_names)

    @property
    def joint_count(self) -> int:
        return len(self.joint_names)

    @abc.abstractmethod
    def open(self) -> None:
        """Connect to (or build) the device. Raises BackendError with the reason."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; the device must be left retracted or unpowered where it can."""

    @abc.abstractmethod
    def read(self) -> HardwareState:
        """The latest state; never blocks for longer than a control period."""

    @abc.abstractmethod
    def write(self, position_m: np.ndarray, enable: np.ndarray) -> None:
        """Send position targets (m) and enable flags for every joint, in joint order."""

    def step(self, dt_s: float) -> None:  # noqa: B027 - a no-op is right for real hardware
        """Advance simulated time by ``dt_s``; real devices run on their own and ignore it."""
