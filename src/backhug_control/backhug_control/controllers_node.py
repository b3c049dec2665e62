"""The ``finger_controllers`` node: every finger's force controller in one fixed-rate loop.

Like ros2_control's controller manager, one timer at ``update_rate_hz`` (on the node clock: sim
time with ``use_sim_time``) runs every ``FingerController`` (a vectorised
``FingerControllerBank``): the latest ``/joint_states`` and ``/finger_setpoints`` in, one
``/finger_commands`` out per cycle, names in /joint_states order, targets inside the joint limits.

All fingers retract (targets to 0 at each finger's retract speed) when:
* the setpoints are older than ``setpoint_timeout_s`` (wall clock) or never came;
* ``/safety/status`` is not OK/WARNING or not heard for ``safety_timeout_s`` (wall clock);
* ``/joint_states`` is older than ``joint_state_timeout_s`` (wall clock) or never came.
A finger missing from a setpoint message retracts alone; NaN/inf in one finger's state or
setpoint retracts that finger and flags it in the diagnostics.

Parameters: ``gains.<gain>`` (start-up defaults for every finger) and
``fingers.<joint name>.<gain>`` / ``fingers.<joint name>.enabled`` per finger, each declared with
a description and range (config/finger_controllers.yaml); run-time changes to the per-finger ones
are validated (range, NaN, contact/release order) and applied live. ``/diagnostics`` at 1 Hz
(per finger: mode, contact, tracking error, saturation), ``/heartbeat`` at 20 Hz on a steady clock
so the node is seen alive even when /clock stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from sensor_msgs.msg import JointState

from backhug_control.finger_controller import (
    GAIN_NAMES,
    RANGES,
    FingerControllerBank,
    FingerGains,
    Mode,
    validate_gains,
)
from backhug_hw_interface import qos, runner
from backhug_interfaces.msg import FingerCommands, FingerSetpoints, Heartbeat, SafetyStatus

NODE_NAME = 'finger_controllers'
MOTION_ALLOWED = (SafetyStatus.OK, SafetyStatus.WARNING)
_SAFETY_NAMES = {
    SafetyStatus.OK: 'OK',
    SafetyStatus.WARNING: 'WARNING',
    SafetyStatus.FAULT: 'FAULT',
    SafetyStatus.ESTOP: 'ESTOP',
}

_GAIN_DESCRIPTIONS = {
    'admittance_gain_m_s_per_n': 'admittance gain: target velocity per newton of force error',
    'integral_gain_m_s_per_n_s': 'integral of the force error into the target velocity',
    'max_integral_m_s': 'clamp of the integral term (anti-windup), m/s',
    'feedforward_stiffness_n_per_m': 'nominal contact stiffness for setpoint-rate feed-forward',
    'max_force_n': 'force ceiling of the finger (setpoint cap; above it the target only drops)',
    'max_force_rate_n_s': 'slew limit of rising setpoints (soft start), N/s',
    'max_velocity_m_s': 'target velocity limit while tracking, m/s',
    'approach_speed_m_s': 'free-space approach speed, m/s',
    'retract_speed_m_s': 'retract speed, m/s',
    'contact_threshold_n': 'load that marks contact, N',
    'release_threshold_n': 'load below which contact is lost (hysteresis), N',
    'off_threshold_n': 'setpoint at or below this means retract, N',
    'max_lead_m': 'most the target may lead the measured position (anti-windup), m',
    'min_position_m': 'lowest target, m',
    'max_position_m': 'highest target, m (also clamped to the joint limit)',
    'load_filter_hz': 'low-pass cut-off on the load signal, Hz (0 = off)',
    'predictor_stiffness_n_per_m': 'delay compensation: contact stiffness times the commanded '
    'motion not yet seen in the load is added to the load the law tracks, N/m (0 = off)',
    'servo_stiffness_n_per_m': "stiffness of the board's position servo, N/m",
}


def _float_descriptor(description: str, low: float, high: float, read_only=False):
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_DOUBLE,
        description=description,
        read_only=read_only,
        floating_point_range=[FloatingPointRange(from_value=low, to_value=high)],
    )


def _bool_descriptor(description: str, read_only=False):
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_BOOL, description=description, read_only=read_only
    )


#: Node-level parameters: name -> (default, descriptor).
NODE_PARAMETERS = {
    'update_rate_hz': (
        200.0,
        _float_descriptor('control loop rate on the node clock, Hz', 10.0, 1000.0, True),
    ),
    'setpoint_timeout_s': (
        0.2,
        _float_descriptor('setpoints older than this (wall s) retract every finger', 0.01, 5.0),
    ),
    'safety_timeout_s': (
        0.25,
        _float_descriptor('safety status older than this (wall s) retracts all fingers', 0.01, 5.0),
    ),
    'joint_state_timeout_s': (
        0.25,
        _float_descriptor('joint states older than this (wall s) retract every finger', 0.01, 5.0),
    ),
    'require_safety': (
        True,
        _bool_descriptor('no motion without a fresh OK/WARNING /safety/status', read_only=True),
    ),
    'hardware': (
        'sim',
        ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING,
            description='backhug_description hardware whose joints and limits to control',
            read_only=True,
        ),
    ),
}


def _kind(reason: str) -> str:
    """A retract reason without its numbers ('... 0.31 s old' changes every cycle)."""
    return re.sub(r'\d+(\.\d+)?', '#', reason)


class FingerControllersNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, descriptor) in NODE_PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        from backhug_description import load_description

        description = load_description(self._param('hardware'))
        self.joints = list(description.joints)
        self.names = [j.name for j in self.joints]
        self._declare_gain_parameters()
        gains = [self._gains_from_parameters(name) for name in self.names]
        self.bank = FingerControllerBank(
            self.names,
            gains,
            lower_m=[j.lower_m for j in self.joints],
            upper_m=[j.upper_m for j in self.joints],
            effort_limit_n=[j.effort_limit_n for j in self.joints],
            velocity_limit_m_s=[j.velocity_limit_m_s for j in self.joints],
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        count = len(self.names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._position = np.full(count, np.nan)
        self._velocity = np.zeros(count)
        self._load = np.full(count, np.nan)
        self._state_order: list[int] | None = None  # bank index per JointState entry
        self._state_names: tuple[str, ...] = ()
        self._state_wall_s: float | None = None
        self._setpoint = np.zeros(count)
        self._setpoint_wall_s: float | None = None
        self._safety_state: int | None = None
        self._safety_wall_s: float | None = None
        self.retract_reason = 'starting: no joint states, setpoints or safety status yet'
        self._heartbeat_seq = 0
        self._err_sq = np.zeros(count)
        self._saturated_cycles = np.zeros(count)
        self._stroke_end_logged = False
        self._cycles = 0
        self._compute_s: list[float] = []
        self.cycle_count = 0
        self._last_tick_wall_s = time.monotonic()

        self._command_pub = self.create_publisher(
            FingerCommands, qos.FINGER_COMMANDS, qos.STATE_QOS
        )
        self._heartbeat_pub = self.create_publisher(Heartbeat, qos.HEARTBEAT, qos.HEARTBEAT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, qos.DIAGNOSTICS, qos.STATE_QOS)
        self.create_subscription(JointState, qos.JOINT_STATES, self._on_joint_state, qos.STATE_QOS)
        self.create_subscription(
            FingerSetpoints, qos.FINGER_SETPOINTS, self._on_setpoints, qos.STATE_QOS
        )
        self.create_subscription(SafetyStatus, qos.SAFETY_STATUS, self._on_safety, qos.LATCHED_QOS)
        self._dt = 1.0 / self._param('update_rate_hz')
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self._dt, self._tick)  # node clock: sim time with use_sim_time
        self.create_timer(0.05, self._publish_heartbeat, clock=self._steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=self._steady)
        self.get_logger().info(
            f'{count} finger controllers at {1.0 / self._dt:.0f} Hz '
            f'(use_sim_time={self.get_parameter("use_sim_time").value}); retracted until '
            'joint states, setpoints and an OK safety status arrive'
        )

    # -- parameters ----------------------------------------------------------------------------

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _declare_gain_parameters(self) -> None:
        defaults = FingerGains()
        self.declare_parameter(
            'gains.enabled',
            True,
            _bool_descriptor('start-up default of fingers.<name>.enabled', read_only=True),
        )
        for gain in GAIN_NAMES:
            low, high = RANGES[gain]
            self.declare_parameter(
                f'gains.{gain}',
                float(getattr(defaults, gain)),
                _float_descriptor(
                    f'start-up default of fingers.<name>.{gain}: {_GAIN_DESCRIPTIONS[gain]}',
                    low,
                    high,
                    read_only=True,
                ),
            )
        for name in self.names:
            self.declare_parameter(
                f'fingers.{name}.enabled',
                bool(self._param('gains.enabled')),
                _bool_descriptor(f'{name}: false = this finger stays retracted (enable=false)'),
            )
            for gain in GAIN_NAMES:
                low, high = RANGES[gain]
                self.declare_parameter(
                    f'fingers.{name}.{gain}',
                    float(self._param(f'gains.{gain}')),
                    _float_descriptor(f'{name}: {_GAIN_DESCRIPTIONS[gain]}', low, high),
                )

    def _gains_from_parameters(self, name: str) -> FingerGains:
        values = {gain: float(self._param(f'fingers.{name}.{gain}')) for gain in GAIN_NAMES}
        gains = FingerGains(enabled=bool(self._param(f'fingers.{name}.enabled')), **values)
        validate_gains(gains, f'fingers.{name}')  # raises at start-up with the parameter's name
        return gains

    def _on_set_parameters(self, params) -> SetParametersResult:
        changed: dict[str, FingerGains] = {}
        for param in params:
            parts = param.name.split('.')
            value = param.value
            if isinstance(value, float) and not math.isfinite(value):
                return SetParametersResult(
                    successful=False, reason=f'{param.name} must be finite, got {value}'
                )
            if len(parts) != 3 or parts[0] != 'fingers':
                continue
            _, finger, field = parts
            if finger not in self._index:
                return SetParametersResult(successful=False, reason=f'unknown finger {finger!r}')
            gains = changed.get(finger) or self.bank.gains(finger)
            if field == 'enabled':
                if not isinstance(value, bool):
                    return SetParametersResult(
                        successful=False, reason=f'{param.name} must be a bool, got {value!r}'
                    )
            elif field not in GAIN_NAMES:
                return SetParametersResult(successful=False, reason=f'unknown gain {param.name}')
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                return SetParametersResult(
                    successful=False, reason=f'{param.name} must be a number, got {value!r}'
                )
            changed[finger] = dataclasses.replace(
                gains, **{field: value if field == 'enabled' else float(value)}
            )
        for finger, gains in changed.items():
            try:
                validate_gains(gains, f'fingers.{finger}')
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for finger, gains in changed.items():
            self.bank.set_gains(finger, gains)
            self.get_logger().info(f'gains of {finger} changed: {gains}')
        return SetParametersResult(successful=True)

    # -- inputs --------------------------------------------------------------------------------

    def _on_joint_state(self, msg: JointState) -> None:
        names = tuple(msg.name)
        if names != self._state_names:
            self._state_names = names
            self._state_order = [self._index.get(n, -1) for n in names]
            unknown = [n for n, i in zip(names, self._state_order, strict=True) if i < 0]
            if unknown:
                self.get_logger().warning(f'/joint_states has unknown joints {unknown} (ignored)')
        count = len(names)
        if len(msg.position) != count or len(msg.effort) != count:
            self.get_logger().error(
                f'/joint_states with {count} names but {len(msg.position)} positions and '
                f'{len(msg.effort)} efforts: ignored',
                throttle_duration_sec=5.0,
            )
            return
        position = np.full(len(self.names), np.nan)
        velocity = np.zeros(len(self.names))
        load = np.full(len(self.names), np.nan)
        order = np.array(self._state_order, dtype=int)
        known = order >= 0
        position[order[known]] = np.asarray(msg.position, float)[known]
        load[order[known]] = np.asarray(msg.effort, float)[known]
        if len(msg.velocity) == count:
            velocity[order[known]] = np.asarray(msg.velocity, float)[known]
        self._position, self._velocity, self._load = position, velocity, load
        self._state_wall_s = time.monotonic()

    def _on_setpoints(self, msg: FingerSetpoints) -> None:
        if len(msg.name) != len(msg.force_n):
            self.get_logger().error(
                f'/finger_setpoints with {len(msg.name)} names and {len(msg.force_n)} forces: '
                'ignored (fingers keep the previous setpoints until they go stale)',
                throttle_duration_sec=5.0,
            )
            return
        setpoint = np.zeros(len(self.names))
        unknown = []
        for name, force in zip(msg.name, msg.force_n, strict=True):
            index = self._index.get(name)
            if index is None:
                unknown.append(name)
            else:
                setpoint[index] = force
        if unknown:
            self.get_logger().warning(
                f'/finger_setpoints for unknown fingers {unknown} ignored',
                throttle_duration_sec=5.0,
            )
        self._setpoint = setpoint
        self._setpoint_wall_s = time.monotonic()

    def _on_safety(self, msg: SafetyStatus) -> None:
        self._safety_state = int(msg.state)
        self._safety_wall_s = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------

    def _retract_reason_now(self, now: float) -> str:
        p = self._param
        if self._state_wall_s is None:
            return 'no /joint_states yet'
        if now - self._state_wall_s > p('joint_state_timeout_s'):
            return f'/joint_states {now - self._state_wall_s:.2f} s old'
        if p('require_safety'):
            if self._safety_wall_s is None:
                return 'no /safety/status yet'
            if now - self._safety_wall_s > p('safety_timeout_s'):
                return f'/safety/status not heard for {now - self._safety_wall_s:.2f} s'
            if self._safety_state not in MOTION_ALLOWED:
                state = _SAFETY_NAMES.get(self._safety_state, str(self._safety_state))
                return f'safety status {state} forbids motion'
        if self._setpoint_wall_s is None:
            return 'no /finger_setpoints yet'
        if now - self._setpoint_wall_s > p('setpoint_timeout_s'):
            return f'/finger_setpoints {now - self._setpoint_wall_s:.2f} s old'
        return ''

    def _tick(self) -> None:
        start = time.monotonic()
        self._last_tick_wall_s = start
        reason = self._retract_reason_now(start)
        if _kind(reason) != _kind(self.retract_reason):  # log changes, not ages
            if reason:
                self.get_logger().warning(f'retracting every finger: {reason}')
            else:
                self.get_logger().info('inputs fresh and safety OK: tracking setpoints')
        self.retract_reason = reason
        if reason.startswith(('no /joint_states', '/joint_states')):
            target, enable = self.bank.retract_all(self._dt)
        else:
            setpoint = np.zeros(len(self.names)) if reason else self._setpoint
            target, enable = self.bank.update(
                self._dt, self._position, self._velocity, self._load, setpoint
            )
            ends = [self.names[i] for i in np.flatnonzero(self.bank.stroke_end)]
            if bool(ends) != self._stroke_end_logged:  # log the start and end of an episode
                self._stroke_end_logged = bool(ends)
                if ends:
                    self.get_logger().warning(
                        f'at the end of their stroke short of the setpoint: {", ".join(ends)} '
                        '(user lifted off the bed or not on the device)'
                    )
                else:
                    self.get_logger().info('no finger at the end of its stroke any more')
            tracking = self.bank.mode == Mode.TRACK
            self._err_sq += np.where(tracking, self.bank.error_n**2, 0.0)
            self._saturated_cycles += self.bank.saturated
        self._cycles += 1
        self._publish_command(target, enable)
        self.cycle_count += 1
        self._compute_s.append(time.monotonic() - start)

    def _publish_command(self, target: np.ndarray, enable: np.ndarray) -> None:
        msg = FingerCommands()
        msg.header.stamp = self.get_clock().now().to_msg()
        order = self._state_order
        if order is not None and sorted(order) == list(range(len(self.names))):
            msg.name = list(self._state_names)
            msg.position_m = [float(target[i]) for i in order]
            msg.enable = [bool(enable[i]) for i in order]
        else:
            msg.name = list(self.names)
            msg.position_m = [float(x) for x in target]
            msg.enable = [bool(e) for e in enable]
        self._command_pub.publish(msg)

    def publish_retract_once(self) -> None:
        """One command with every finger's target at its lower limit (used on shutdown)."""
        target = np.array([j.lower_m for j in self.joints])
        self._publish_command(target, np.ones(len(self.names), dtype=bool))

    # -- liveness and diagnostics --------------------------------------------------------------

    def _publish_heartbeat(self, state: int | None = None) -> None:
        self._heartbeat_seq += 1
        invalid = [self.names[i] for i in np.flatnonzero(self.bank.invalid)]
        detail = self.retract_reason
        if invalid:
            detail = (detail + '; ' if detail else '') + f'invalid input: {", ".join(invalid)}'
        stalled_s = time.monotonic() - self._last_tick_wall_s
        if stalled_s > 0.5:  # e.g. use_sim_time with no /clock: the loop timer never fires
            detail = f'control loop idle for {stalled_s:.1f} s (node clock stopped?); ' + detail
        if state is None:
            degraded = bool(invalid) or self.retract_reason.startswith('/joint_states')
            degraded |= stalled_s > 0.5
            state = Heartbeat.STATE_DEGRADED if degraded else Heartbeat.STATE_OK
        msg = Heartbeat(
            node_name=NODE_NAME, state=state, sequence=self._heartbeat_seq, detail=detail
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._heartbeat_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        cycles = max(self._cycles, 1)
        rms = np.sqrt(self._err_sq / cycles)
        saturation = self._saturated_cycles / cycles
        compute = np.array(self._compute_s) if self._compute_s else np.zeros(1)
        statuses = [
            DiagnosticStatus(
                level=DiagnosticStatus.OK if not self.retract_reason else DiagnosticStatus.WARN,
                name=f'{NODE_NAME}: loop',
                hardware_id='backhug',
                message=self.retract_reason or 'tracking',
                values=[
                    KeyValue(key='cycles', value=str(self._cycles)),
                    KeyValue(key='rate_hz', value=f'{1.0 / self._dt:.1f}'),
                    KeyValue(key='compute_mean_ms', value=f'{compute.mean() * 1000:.3f}'),
                    KeyValue(key='compute_max_ms', value=f'{compute.max() * 1000:.3f}'),
                ],
            )
        ]
        for i, name in enumerate(self.names):
            invalid = bool(self.bank.invalid[i])
            level = DiagnosticStatus.OK
            message = Mode(int(self.bank.mode[i])).name.lower()
            if invalid:
                level, message = DiagnosticStatus.ERROR, 'invalid input (NaN/inf): retracting'
            elif self.bank.stroke_end[i]:
                level = DiagnosticStatus.WARN
                message = (
                    f'{message}: at the end of its stroke short of the setpoint '
                    '(user lifted off the bed or not on the device)'
                )
            elif saturation[i] > 0.5:
                level, message = DiagnosticStatus.WARN, f'{message}, saturated'
            statuses.append(
                DiagnosticStatus(
                    level=level,
                    name=f'{NODE_NAME}: {name}',
                    hardware_id='backhug',
                    message=message,
                    values=[
                        KeyValue(key='mode', value=Mode(int(self.bank.mode[i])).name),
                        KeyValue(key='contact', value=str(bool(self.bank.contact[i]))),
                        KeyValue(key='enabled', value=str(bool(self.bank.enable[i]))),
                        KeyValue(key='setpoint_n', value=f'{self._setpoint[i]:.2f}'),
                        KeyValue(key='load_n', value=f'{self._load[i]:.2f}'),
                        KeyValue(key='target_m', value=f'{self.bank.target_m[i]:.5f}'),
                        KeyValue(key='tracking_error_rms_n', value=f'{rms[i]:.3f}'),
                        KeyValue(key='saturated_fraction', value=f'{saturation[i]:.3f}'),
                        KeyValue(key='invalid_input', value=str(invalid)),
                        KeyValue(key='stroke_end', value=str(bool(self.bank.stroke_end[i]))),
                    ],
                )
            )
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)
        self._err_sq[:] = 0.0
        self._saturated_cycles[:] = 0.0
        self._cycles = 0
        self._compute_s = []


def main(args: list[str] | None = None) -> int:
    """Run finger_controllers until SIGINT/SIGTERM; a last command retracts every finger."""
    stop = runner.init(args)
    try:
        node = FingerControllersNode()
    except (ValueError, ParameterException) as exc:  # bad parameter: name it, move nothing
        print(f'finger_controllers: invalid parameter: {exc}', file=sys.stderr, flush=True)
        rclpy.shutdown()
        return 2
    try:
        runner.spin(node, stop)
    finally:
        with contextlib.suppress(Exception):
            node.publish_retract_once()
            node._publish_heartbeat(Heartbeat.STATE_STOPPING)
        runner.shutdown(node)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
