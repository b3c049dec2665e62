"""DeviceSimulation: the BackHug device and a simulated user in MuJoCo, driven like the board.

The board's side of the contract: position targets and enable flags per finger in, positions,
velocities and tip loads (N, + = pushing on the user) out. Like the real board, each finger's
servo setpoint moves towards its target at no more than the joint's velocity limit (updated every
physics step, 1 kHz by default), the servo force is limited to the joint's effort limit, and a
disabled finger retracts to its lower limit. Targets are clamped to the joint limits; NaN, inf or
wrong lengths are rejected (ValueError naming the field) before anything moves.

Physics steps run in C (``mj_step(..., nstep)``) whenever no setpoint is ramping, so stepping at a
200-500 Hz control rate costs little Python. The simulation is deterministic: the same
description, user, seed and calls give bit-identical results.

Ground truth for tests and the scan helper: ``true_stiffness_n_per_mm()`` (the tissue joint
stiffness under each finger, after any de-stiffening), ``true_contact_height_m()`` (the joint
position at which each finger's tip meets the relaxed back in the torso's current pose) and
``true_position_m()`` (where each finger really is, whatever a frozen sensor reports).

Faults for the board emulator: ``inject('freeze_sensor' | 'stall_finger' | 'push', finger, ...)``
or the methods of the same names, and ``clear()``.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from backhug_hw_interface.sim.model import ServoParameters, build_model, tissue_springref_m
from backhug_hw_interface.sim.user import SimulatedUser, destiffened_stiffness

# Physics steps run between de-stiffening updates when nothing else needs Python (10 ms: a
# loading stroke at the 3 Hz top of the mobilisation range lasts ~170 ms).
_BOOKKEEPING_STEPS = 10
FAULT_KINDS = ('freeze_sensor', 'stall_finger', 'push')


class DeviceSimulation:
    """The device of ``description`` with ``user`` lying on it, simulated in MuJoCo."""

    def __init__(
        self,
        description,
        user: SimulatedUser | str = 'default',
        *,
        timestep_s: float = 0.001,
        seed: int = 0,
        servo: ServoParameters | None = None,
        settle_s: float = 0.5,
    ) -> None:
        if not (isinstance(timestep_s, (int, float)) and 1e-5 <= timestep_s <= 0.005):
            raise ValueError(f'timestep_s must be in [1e-5, 0.005] s, got {timestep_s!r}')
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
        self.description = description
        self.user = user if isinstance(user, SimulatedUser) else SimulatedUser.load(user)
        self.joints = list(description.joints)
        self.joint_names = [joint.name for joint in self.joints]
        self.joint_count = len(self.joints)
        if self.joint_count == 0:
            raise ValueError('description has no finger joints')
        self.seed = seed
        self.servo = servo or ServoParameters()
        offsets = np.array([j.spine_offset_m for j in self.joints])
        sides = np.array([j.side for j in self.joints])
        self._initial_stiffness = self.user.stiffness_at(offsets, sides)
        self._stiffness = self._initial_stiffness.copy()
        self.model, self._index = build_model(
            description, self.user, self._stiffness, float(timestep_s), self.servo
        )
        self.data = mujoco.MjData(self.model)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._lower = np.array([j.lower_m for j in self.joints])
        self._upper = np.array([j.upper_m for j in self.joints])
        self._max_step_m = np.array([j.velocity_limit_m_s for j in self.joints]) * float(
            self.model.opt.timestep
        )
        self._target = self._lower.copy()
        self._enable = np.zeros(self.joint_count, dtype=bool)
        self._setpoint = self._lower.copy()
        self._work_j = np.zeros(self.joint_count)
        self._energy_j = np.zeros(self.joint_count)
        self._frozen = np.zeros(self.joint_count, dtype=bool)
        self._stalled = np.zeros(self.joint_count, dtype=bool)
        self._push_force_n = np.zeros(self.joint_count)
        self._push_until_step = np.zeros(self.joint_count, dtype=np.int64)
        self._steps = 0
        self._due_steps = 0.0
        self.data.ctrl[self._index.finger_actuator] = self._setpoint
        # Let the torso settle onto the pad, then start the clock at zero.
        settle_steps = max(0, round(settle_s / self.model.opt.timestep))
        mujoco.mj_step(self.model, self.data, nstep=settle_steps)
        self.data.time = 0.0
        self._energy_j = self._tissue_energy()
        self._position = np.zeros(self.joint_count)
        self._velocity = np.zeros(self.joint_count)
        self._load = np.zeros(self.joint_count)
        self._sample()

    # -- commands ------------------------------------------------------------------------------

    def set_targets(self, position_m: np.ndarray, enable: np.ndarray) -> None:
        """Position targets (m, clamped to the joint limits) and enable flags for every finger."""
        position = _finite_array('position_m', position_m, self.joint_count, float)
        flags = np.asarray(enable)
        if flags.shape != (self.joint_count,):
            raise ValueError(
                f'enable must have {self.joint_count} entries, got shape {flags.shape}'
            )
        if flags.dtype != bool:
            flags = _finite_array('enable', flags, self.joint_count, float) != 0.0
        self._target = np.clip(position, self._lower, self._upper)
        self._enable = flags.copy()

    def step(self, dt_s: float) -> None:
        """Advance the simulation by ``dt_s`` seconds (whole physics steps; the rest carries on)."""
        if not isinstance(dt_s, (int, float)) or not math.isfinite(dt_s) or dt_s < 0:
            raise ValueError(f'dt_s must be a finite number >= 0, got {dt_s!r}')
        self._due_steps += dt_s / float(self.model.opt.timestep)
        remaining = math.floor(self._due_steps + 1e-6) - self._steps
        goal = np.where(self._enable, self._target, self._lower)
        model, data, index = self.model, self.data, self._index
        while remaining > 0:
            goal_now = np.where(self._stalled, self._setpoint, goal)
            ramping = not np.array_equal(self._setpoint, goal_now)
            if ramping:
                limit = self._max_step_m
                self._setpoint += np.clip(goal_now - self._setpoint, -limit, limit)
                data.ctrl[index.finger_actuator] = self._setpoint
                chunk = 1
            else:
                chunk = min(remaining, _BOOKKEEPING_STEPS)
                pushing = self._push_until_step > self._steps
                if pushing.any():
                    chunk = min(chunk, int(np.min(self._push_until_step[pushing])) - self._steps)
            self._apply_pushes()
            mujoco.mj_step(model, data, nstep=chunk)
            self._steps += chunk
            remaining -= chunk
            self._account_mobilisation()
        self._apply_pushes()
        self._sample()

    # -- state ---------------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Simulated time since construction, s."""
        return float(self.data.time)

    @property
    def position_m(self) -> np.ndarray:
        """Finger joint positions, m (0 = retracted), in joint order."""
        return self._position.copy()

    @property
    def velocity_m_s(self) -> np.ndarray:
        """Finger joint velocities, m/s."""
        return self._velocity.copy()

    @property
    def load_n(self) -> np.ndarray:
        """Load at each tip (load cell, with noise), N, + = pushing on the user."""
        return self._load.copy()

    @property
    def body_weight_n(self) -> float:
        """Weight the fingers and the pad carry: the simulated trunk (torso + tissue), N."""
        return self.user.trunk_weight_n

    def true_position_m(self) -> np.ndarray:
        """Ground truth: finger joint positions, m, even where a sensor is frozen."""
        return self.data.qpos[self._index.finger_qpos].copy()

    def true_stiffness_n_per_mm(self) -> np.ndarray:
        """Ground truth: tissue stiffness under each finger now (after de-stiffening), N/mm."""
        return self._stiffness.copy()

    def initial_stiffness_n_per_mm(self) -> np.ndarray:
        """The user's tissue stiffness under each finger before any mobilisation, N/mm."""
        return self._initial_stiffness.copy()

    def mobilisation_work_j(self) -> np.ndarray:
        """Mobilisation work put into each finger's tissue so far (de-stiffening input), J."""
        return self._work_j.copy()

    def true_contact_height_m(self) -> np.ndarray:
        """Ground truth: joint position (m) at which each tip meets the relaxed back, now.

        The underside of each tissue body at its rest (q = 0) in the torso's current pose, minus
        the height of the tip's top at joint position 0.
        """
        index = self._index
        q = self.data.qpos[index.tissue_qpos]
        xmat = self.data.xmat[index.tissue_body].reshape(-1, 3, 3)
        half_z = self.model.geom_size[index.tissue_geom, 2]
        # Body z axis in world = third column of its rotation; undo the slide, go to the bottom.
        axis = xmat[:, :, 2]
        bottom = self.data.xpos[index.tissue_body] - axis * (q + half_z)[:, None]
        return bottom[:, 2] - index.tip_top_z0_m

    def torso_height_m(self) -> float:
        """Torso lift above its rest on the pad (its slide joint), m (diagnostics and tests)."""
        return float(self.data.qpos[self._index.torso_qpos[0]])

    # -- faults --------------------------------------------------------------------------------

    def inject(self, kind: str, finger: int | str, **parameters: float) -> None:
        """Inject a fault: 'freeze_sensor', 'stall_finger' or 'push' (force_n=, duration_s=)."""
        if kind == 'freeze_sensor':
            self.freeze_sensor(finger)
        elif kind == 'stall_finger':
            self.stall_finger(finger)
        elif kind == 'push':
            self.push(finger, **parameters)
        else:
            raise ValueError(f'kind must be one of {FAULT_KINDS}, got {kind!r}')

    def freeze_sensor(self, finger: int | str) -> None:
        """The finger's sensor sample (position, velocity, load) stays at its current value."""
        self._frozen[self._finger_index(finger)] = True

    def stall_finger(self, finger: int | str) -> None:
        """The finger's motor jams where it is: it ignores targets and disable until cleared."""
        finger_index = self._finger_index(finger)
        self._stalled[finger_index] = True
        self._setpoint[finger_index] = self.data.qpos[self._index.finger_qpos[finger_index]]
        self.data.ctrl[self._index.finger_actuator] = self._setpoint

    def push(self, finger: int | str, force_n: float, duration_s: float) -> None:
        """A load spike: ``force_n`` pressing the back down onto one finger for ``duration_s``.

        The force acts on the finger's tissue body (e.g. the user pressing down); the finger's
        servo and the tissue above share it, so the load cell rises by
        force_n * kp / (kp + k_tissue) (~80 % with the default servo) while the finger touches.
        """
        finger_index = self._finger_index(finger)
        for name, value, high in (('force_n', force_n, 2000.0), ('duration_s', duration_s, 3600.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f'{name} must be a number, got {value!r}')
            if not math.isfinite(value) or not 0.0 <= value <= high:
                raise ValueError(f'{name} must be in [0, {high}], got {value!r}')
        steps = round(duration_s / self.model.opt.timestep)
        self._push_force_n[finger_index] = float(force_n)
        self._push_until_step[finger_index] = self._steps + steps
        self._apply_pushes()

    def clear(self, finger: int | str | None = None) -> None:
        """Clear every injected fault (of one finger, or of all)."""
        selected = (
            np.ones(self.joint_count, dtype=bool)
            if finger is None
            else np.arange(self.joint_count) == self._finger_index(finger)
        )
        self._frozen[selected] = False
        self._stalled[selected] = False
        self._push_until_step[selected] = 0
        self._push_force_n[selected] = 0.0
        self._apply_pushes()
        self._sample()

    # -- internals -----------------------------------------------------------------------------

    def _finger_index(self, finger: int | str) -> int:
        if isinstance(finger, str):
            if finger not in self.joint_names:
                raise ValueError(f'finger must be a joint name or index, unknown {finger!r}')
            return self.joint_names.index(finger)
        if isinstance(finger, bool) or not isinstance(finger, (int, np.integer)):
            raise ValueError(f'finger must be a joint name or index, got {finger!r}')
        if not 0 <= finger < self.joint_count:
            raise ValueError(f'finger index must be in [0, {self.joint_count}), got {finger}')
        return int(finger)

    def _apply_pushes(self) -> None:
        active = self._push_until_step > self._steps
        forces = np.where(active, self._push_force_n, 0.0)
        self.data.xfrc_applied[self._index.tissue_body, 2] = -forces

    def _tissue_energy(self) -> np.ndarray:
        compression = np.maximum(self.data.qpos[self._index.tissue_qpos], 0.0)
        return 0.5 * self._stiffness * 1000.0 * compression**2

    def _account_mobilisation(self) -> None:
        """Accumulate the work of loading strokes and apply the de-stiffening law."""
        energy = self._tissue_energy()
        self._work_j += np.maximum(energy - self._energy_j, 0.0)
        law = self.user.destiffening
        if law.enabled:
            self._stiffness = destiffened_stiffness(self._initial_stiffness, self._work_j, law)
            joints = self._index.tissue_joint
            self.model.jnt_stiffness[joints] = self._stiffness * 1000.0
            self.model.qpos_spring[self._index.tissue_qpos] = [
                tissue_springref_m(self.user.tissue_mass_kg, k) for k in self._stiffness
            ]
            energy = self._tissue_energy()
        self._energy_j = energy

    def _sample(self) -> None:
        index, data = self._index, self.data
        live = ~self._frozen
        position = data.qpos[index.finger_qpos]
        velocity = data.qvel[index.finger_dof]
        load = data.sensordata[index.tip_sensor_adr]
        if self.user.load_noise_n > 0.0:
            load = load + self._rng.normal(0.0, self.user.load_noise_n, self.joint_count)
        self._position[live] = position[live]
        self._velocity[live] = velocity[live]
        self._load[live] = load[live]


def _finite_array(name: str, value, count: int, dtype) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{name} must be {count} numbers: {exc}') from exc
    if array.shape != (count,):
        raise ValueError(f'{name} must have {count} entries, got shape {array.shape}')
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f'{name}[{bad[0]}] is {array[bad[0]]}: every entry must be finite')
    return array
