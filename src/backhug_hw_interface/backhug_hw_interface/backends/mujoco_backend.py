"""The ``mujoco`` backend: the device simulated in MuJoCo with a simulated user lying on it.

A thin adapter from the ``Backend`` contract to ``backhug_hw_interface.sim.DeviceSimulation``:
``write`` sets servo targets, ``step`` advances simulated time (hw_interface owns it and
publishes it as /clock), ``read`` returns the positions, velocities and tip loads of the
joints hw_interface asked for, in its order. The link is always up and there is no board, so
the link counters and board faults stay zero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backhug_hw_interface.backends.base import Backend, BackendError, HardwareState

FAULT_ESTOP = 8  # backhug_interfaces/HardwareStatus.FAULT_ESTOP


class MujocoBackend(Backend):
    """Backend over DeviceSimulation; ``joint_names`` must be finger joints of the description."""

    def __init__(
        self,
        joint_names: list[str],
        *,
        description=None,
        user: str | Path = 'default',
        timestep_s: float = 0.001,
        seed: int = 0,
    ) -> None:
        super().__init__(joint_names)
        self._description = description
        self._user = user
        self._timestep_s = timestep_s
        self._seed = seed
        self.simulation = None
        self._order = np.zeros(0, dtype=int)
        self.estop = False  # the simulated emergency-stop input (see inject)

    @property
    def sim_time_s(self) -> float | None:  # type: ignore[override]
        """Simulated time in seconds (0 before open)."""
        return 0.0 if self.simulation is None else self.simulation.time_s

    def open(self) -> None:
        """Build the simulation (description, user, physics). Raises BackendError."""
        from backhug_hw_interface.sim import DeviceSimulation, SimulatedUser, SimulatedUserError

        try:
            description = self._description
            if description is None:
                from backhug_description import load_description

                description = load_description('sim')
            user = SimulatedUser.load(self._user)
            simulation = DeviceSimulation(
                description, user, timestep_s=self._timestep_s, seed=self._seed
            )
        except (SimulatedUserError, ValueError, OSError, ImportError) as exc:
            raise BackendError(f'mujoco backend: cannot build the simulation: {exc}') from exc
        unknown = [name for name in self.joint_names if name not in simulation.joint_names]
        if unknown:
            raise BackendError(
                f'mujoco backend: joints {unknown} are not finger joints of the description '
                f'({simulation.joint_names})'
            )
        if len(set(self.joint_names)) != len(self.joint_names):
            raise BackendError(f'mujoco backend: joint_names repeat a joint: {self.joint_names}')
        self._order = np.array([simulation.joint_names.index(n) for n in self.joint_names])
        self.simulation = simulation

    def simulation_truth(self) -> dict[str, np.ndarray]:
        """Ground truth of the simulated user per backend joint, for tests and benchmarks:
        ``stiffness_n_per_mm`` (now, after any de-stiffening), ``work_j`` (mobilisation work so
        far) and ``position_mm`` (where the finger really is, whatever a frozen sensor says).
        A real board has no such thing; the node reports it in /diagnostics."""
        simulation = self._require_open()
        return {
            'stiffness_n_per_mm': simulation.true_stiffness_n_per_mm()[self._order],
            'work_j': simulation.mobilisation_work_j()[self._order],
            'position_mm': simulation.true_position_m()[self._order] * 1000.0,
        }

    def close(self) -> None:
        """Drop the simulation (a simulated device needs no retract)."""
        self.simulation = None

    def _require_open(self):
        if self.simulation is None:
            raise BackendError('mujoco backend is not open (call open() first)')
        return self.simulation

    def write(self, position_m: np.ndarray, enable: np.ndarray) -> None:
        """Targets for the backend's joints; description joints not driven here stay disabled."""
        simulation = self._require_open()
        position = np.asarray(position_m, dtype=float)
        flags = np.asarray(enable, dtype=bool)
        for name, array in (('position_m', position), ('enable', flags)):
            if array.shape != (self.joint_count,):
                raise ValueError(
                    f'{name} must have {self.joint_count} entries, got shape {array.shape}'
                )
        bad = np.flatnonzero(~np.isfinite(position))
        if bad.size:
            raise ValueError(
                f'position_m[{bad[0]}] ({self.joint_names[bad[0]]}) is {position[bad[0]]}: '
                'every target must be finite'
            )
        full_position = np.zeros(simulation.joint_count)
        full_enable = np.zeros(simulation.joint_count, dtype=bool)
        if self.estop:  # like the board: the e-stop input retracts whatever the host says
            position = np.zeros_like(position)
        full_position[self._order] = position
        full_enable[self._order] = flags
        simulation.set_targets(full_position, full_enable)

    def step(self, dt_s: float) -> None:
        """Advance simulated time by ``dt_s`` seconds."""
        self._require_open().step(dt_s)

    def read(self) -> HardwareState:
        """The simulated device's state for the backend's joints."""
        simulation = self._require_open()
        order = self._order
        return HardwareState(
            stamp_s=simulation.time_s,
            position_m=simulation.position_m[order],
            velocity_m_s=simulation.velocity_m_s[order],
            effort_n=simulation.load_n[order],
            link_ok=True,
            estop=self.estop,
            board_faults=FAULT_ESTOP if self.estop else 0,
            finger_faults=np.zeros(self.joint_count, dtype=np.uint32),
            fault_messages=['emergency stop pressed (simulated)'] if self.estop else [],
        )

    def inject(self, command: str) -> str:
        """Apply a fault command to the simulated device; returns what was done.

        Commands (the board emulator's control socket speaks the same words):
        ``estop on|off``, ``push NAME FORCE_N DURATION_S``, ``freeze NAME``, ``stall NAME``,
        ``clear [NAME]``. Raises ValueError naming what is wrong with a bad command.
        """
        simulation = self._require_open()
        words = command.split()
        if not words:
            raise ValueError('empty fault command')
        verb, args = words[0], words[1:]
        expected = {'estop': 1, 'push': 3, 'freeze': 1, 'stall': 1}
        if verb == 'clear' and len(args) <= 1:
            simulation.clear(args[0] if args else None)
            self.estop = False if not args else self.estop
            return f'cleared {args[0] if args else "every fault"}'
        if verb not in expected:
            raise ValueError(
                f'unknown fault command {verb!r}: expected estop, push, freeze, stall or clear'
            )
        if len(args) != expected[verb]:
            raise ValueError(f'{verb} takes {expected[verb]} argument(s), got {args}')
        if verb == 'estop':
            if args[0] not in ('on', 'off'):
                raise ValueError(f'estop takes on|off, got {args[0]!r}')
            self.estop = args[0] == 'on'
            return f'emergency stop {args[0]}'
        if verb == 'push':
            try:
                force, duration = float(args[1]), float(args[2])
            except ValueError:
                raise ValueError(
                    f'push FORCE_N DURATION_S must be numbers, got {args[1:]}'
                ) from None
            simulation.push(args[0], force, duration)
            return f'pushing {args[0]} with {force} N for {duration} s'
        if verb == 'freeze':
            simulation.freeze_sensor(args[0])
            return f'sensor of {args[0]} frozen'
        simulation.stall_finger(args[0])
        return f'{args[0]} stalled'
