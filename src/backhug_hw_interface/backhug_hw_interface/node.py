"""The ``hw_interface`` lifecycle node: owns the device, whichever backend drives it.

configure: reads the joints and limits from the robot description's ``<ros2_control>`` block
(``robot_description`` parameter, or the package description for ``hardware``), builds and opens
the backend (``mujoco`` | ``serial`` | ``ros2_control``). activate: starts the control loop at
``update_rate_hz``: each cycle the guards (``backhug_hw_interface.guards``) turn the latest
``/finger_commands`` and ``/safety/status`` into targets, the backend writes them (and steps
simulated time: ``sim_speed`` x real time, publishing ``/clock``), reads the state and the node
publishes ``/joint_states``. ``/hardware/status`` goes out at 10 Hz and on every change,
``/diagnostics`` at 1 Hz, ``/heartbeat`` at 20 Hz on a steady clock. deactivate retracts.

Services: ``/hw_interface/safe_stop`` (retract and hold until reset) and ``/hw_interface/reset``.
With ``fault_injection`` true (simulation only) ``/hw_interface/sim_fault`` (std_msgs/String)
takes the simulated board's fault commands (see MujocoBackend.inject) and ``joint_states off|on``
(freeze the /joint_states stream) — the way system tests and the fault campaign hurt the device.
"""

from __future__ import annotations

import collections
import math
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from backhug_hw_interface import qos, runner
from backhug_hw_interface.backends.base import Backend, BackendError, HardwareState
from backhug_hw_interface.guards import CommandGuard, GuardMode, GuardParams
from backhug_hw_interface.urdf_joints import DescriptionJointsError, driven_joints
from backhug_interfaces.msg import FingerCommands, HardwareStatus, Heartbeat, SafetyStatus
from backhug_interfaces.srv import SafeStop

BACKENDS = ('mujoco', 'serial', 'ros2_control')


def _float(description: str, low: float, high: float, read_only: bool = False):
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        floating_point_range=[FloatingPointRange(from_value=low, to_value=high)],
    )


def _int(description: str, low: int, high: int, read_only: bool = False):
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        integer_range=[IntegerRange(from_value=low, to_value=high)],
    )


def _text(description: str, read_only: bool = True):
    return ParameterDescriptor(description=description, read_only=read_only)


#: name -> (default, descriptor). Structural parameters are read-only once the node exists.
PARAMETERS = {
    'backend': ('mujoco', _text('device backend: mujoco | serial | ros2_control')),
    'hardware': ('sim', _text('description hardware choice when robot_description is empty')),
    'robot_description': ('', _text('URDF with the <ros2_control> block; empty = package one')),
    'autostart': (False, _text('configure and activate on start (no lifecycle manager)')),
    'update_rate_hz': (200.0, _float('control loop rate, Hz', 10.0, 2000.0, read_only=True)),
    'sim_speed': (1.0, _float('mujoco: simulated seconds per wall second', 0.05, 100.0)),
    'publish_clock': (True, _text('mujoco: publish simulated time on /clock')),
    'sim_user': ('default', _text('mujoco: simulated user (name or YAML path)')),
    'sim_seed': (0, _int('mujoco: random seed of the simulation', 0, 2**31 - 1, read_only=True)),
    'sim_timestep_s': (0.001, _float('mujoco: physics step, s', 0.0001, 0.005, read_only=True)),
    'serial_port': ('/dev/ttyACM0', _text('serial: the motor board device')),
    'serial_baudrate': (1_000_000, _int('serial: baud rate', 9600, 12_000_000, read_only=True)),
    'serial_link_timeout_s': (
        0.1,
        _float('serial: no valid frame for this long = link down', 0.01, 5.0, read_only=True),
    ),
    'command_timeout_s': (0.2, _float('command older than this (wall s) is held', 0.005, 5.0)),
    'hold_timeout_s': (0.3, _float('hold (s) after the timeout, then retract', 0.0, 10.0)),
    'safety_timeout_s': (0.5, _float('safety status older than this (s): no motion', 0.01, 5.0)),
    'retract_speed_m_s': (0.02, _float('retract speed, m/s', 0.001, 0.2)),
    'require_safety': (True, _text('no motion without a fresh OK safety status', False)),
    'stall_error_m': (
        0.0002,
        _float(
            'a finger this far off its target (beyond load sag), not moving: stalled, m',
            0.0001,
            0.05,
        ),
    ),
    'stall_time_s': (0.5, _float('stalled this long (device time) -> safe stop, s', 0.05, 10.0)),
    'servo_stiffness_n_per_m': (
        50000.0,
        _float(
            "the device's position servo: a finger pressing F sits F/k below its target",
            1000.0,
            1e7,
        ),
    ),
    'fault_injection': (False, _text('simulation only: accept /hw_interface/sim_fault')),
    'ros2_control_command_topic': ('/finger_position_controller/commands', _text('r2c cmd')),
    'ros2_control_state_topic': ('/joint_state_broadcaster/joint_states', _text('r2c state')),
    'ros2_control_state_timeout_s': (
        0.2,
        _float('r2c: no joint state for this long = link down', 0.01, 5.0, read_only=True),
    ),
}
_GUARD_PARAMETERS = (
    'command_timeout_s',
    'hold_timeout_s',
    'safety_timeout_s',
    'retract_speed_m_s',
    'require_safety',
    'stall_error_m',
    'stall_time_s',
    'servo_stiffness_n_per_m',
)


class HwInterfaceNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('hw_interface', **kwargs)
        self.guard: CommandGuard | None = None
        # Registered first, so a bad value given at start-up is refused by name too.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self.exit_code: int | None = None
        self.backend: Backend | None = None
        self.joint_names: list[str] = []
        self.state: HardwareState | None = None
        self._loop_timer = None
        self._periodic: list = []
        self._heartbeat_seq = 0
        self._mute_joint_states = False
        self._last_status_key = None
        self._last_mode = None
        self._last_tick_wall: float | None = None
        self.tick_periods = collections.deque(maxlen=2000)  # wall s between loop ticks
        self.loop_compute_s = collections.deque(maxlen=2000)  # wall s spent inside a tick
        # Heartbeat and status are alive from construction: a node that cannot configure is
        # still seen (DEGRADED) rather than silent.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._heartbeat_pub = self.create_publisher(Heartbeat, qos.HEARTBEAT, qos.HEARTBEAT_QOS)
        self.create_timer(0.05, self._publish_heartbeat, clock=self._steady)
        self._autostart_timer = None
        if self.get_parameter('autostart').value:
            self._autostart_timer = self.create_timer(
                0.01, self._autostart_once, clock=self._steady
            )

    # -- parameters ----------------------------------------------------------------------------

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            value = param.value
            if isinstance(value, float) and not math.isfinite(value):
                return SetParametersResult(
                    successful=False, reason=f'{param.name} must be finite, got {value}'
                )
            if param.name == 'backend' and value not in BACKENDS:
                return SetParametersResult(
                    successful=False, reason=f'backend must be one of {BACKENDS}, got {value!r}'
                )
        updates = {p.name: p.value for p in params if p.name in _GUARD_PARAMETERS}
        if updates and self.guard is not None:
            candidate = GuardParams(**{**vars(self.guard.params), **updates})
            try:
                candidate.validate()
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.guard.params = candidate
        return SetParametersResult(successful=True)

    def _param(self, name: str):
        return self.get_parameter(name).value

    # -- lifecycle -----------------------------------------------------------------------------

    def _autostart_once(self) -> None:
        # cancel, not destroy_timer: rclpy's destroy_timer removes the first *equal* timer
        # from the node's list, which took the heartbeat timer with it (measured).
        self._autostart_timer.cancel()
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
        else:  # no lifecycle manager will retry: exit, naming the reason (logged above)
            self.exit_code = 1

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            joints = driven_joints(self._robot_description())
            self.joint_names = [j.name for j in joints]
            self.guard = CommandGuard(
                self.joint_names,
                [j.lower_m for j in joints],
                [j.upper_m for j in joints],
                GuardParams(**{name: self._param(name) for name in _GUARD_PARAMETERS}),
            )
            self.backend = self._make_backend()
            self.backend.open()
        except (DescriptionJointsError, BackendError, ValueError, OSError) as exc:
            self.get_logger().error(f'configure failed: {exc}')
            self.backend = None
            return TransitionCallbackReturn.FAILURE
        self.state = self.backend.read()
        self._joint_pub = self.create_publisher(JointState, qos.JOINT_STATES, qos.STATE_QOS)
        self._status_pub = self.create_publisher(HardwareStatus, qos.HARDWARE_STATUS, qos.STATE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, qos.DIAGNOSTICS, qos.STATE_QOS)
        self._clock_pub = None
        if self.backend.sim_time_s is not None and self._param('publish_clock'):
            self._clock_pub = self.create_publisher(ClockMsg, qos.CLOCK, qos.STATE_QOS)
        self._subs = [
            self.create_subscription(
                FingerCommands, qos.FINGER_COMMANDS, self._on_command, qos.STATE_QOS
            ),
            self.create_subscription(
                SafetyStatus, qos.SAFETY_STATUS, self._on_safety, qos.LATCHED_QOS
            ),
        ]
        self._own_services = [
            self.create_service(SafeStop, qos.SAFE_STOP_SERVICE, self._on_safe_stop),
            self.create_service(Trigger, qos.HW_RESET_SERVICE, self._on_reset),
        ]
        if self._param('fault_injection'):
            self._subs.append(
                self.create_subscription(String, '/hw_interface/sim_fault', self._on_fault, 10)
            )
        self._periodic = [
            self.create_timer(0.1, self._publish_status, clock=self._steady),
            self.create_timer(1.0, self._publish_diagnostics, clock=self._steady),
        ]
        self._joint_msg = JointState(name=list(self.joint_names))
        self.get_logger().info(
            f'configured: backend {self._param("backend")}, {len(self.joint_names)} joints'
        )
        return TransitionCallbackReturn.SUCCESS

    def _robot_description(self) -> str:
        urdf = self._param('robot_description')
        if urdf:
            return urdf
        from backhug_description import load_description

        return load_description(self._param('hardware')).urdf

    def _make_backend(self) -> Backend:
        kind = self._param('backend')
        if kind == 'mujoco':
            from backhug_description import load_description
            from backhug_hw_interface.backends.mujoco_backend import MujocoBackend

            return MujocoBackend(
                self.joint_names,
                description=load_description('sim'),
                user=self._param('sim_user'),
                timestep_s=self._param('sim_timestep_s'),
                seed=self._param('sim_seed'),
            )
        if kind == 'serial':
            from backhug_hw_interface.backends.serial_backend import SerialBackend

            return SerialBackend(
                self.joint_names,
                port=self._param('serial_port'),
                baudrate=self._param('serial_baudrate'),
                link_timeout_s=self._param('serial_link_timeout_s'),
            )
        if kind == 'ros2_control':
            from backhug_hw_interface.backends.ros2_control_backend import Ros2ControlBackend

            return Ros2ControlBackend(
                self.joint_names,
                node=self,
                command_topic=self._param('ros2_control_command_topic'),
                state_topic=self._param('ros2_control_state_topic'),
                state_timeout_s=self._param('ros2_control_state_timeout_s'),
            )
        raise ValueError(f'backend must be one of {BACKENDS}, got {kind!r}')

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        reset_board = getattr(self.backend, 'reset_board', None)
        if reset_board is not None:
            reset_board()  # a board that timed out waiting for us starts with WATCHDOG latched
        rate = self._param('update_rate_hz')
        self._dt = 1.0 / rate
        speed = self._param('sim_speed') if self.backend.sim_time_s is not None else 1.0
        self._last_tick_wall = None
        self._loop_timer = self.create_timer(self._dt / speed, self._tick, clock=self._steady)
        self.get_logger().info(f'active: {rate:g} Hz' + (f', x{speed:g}' if speed != 1 else ''))
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_loop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_loop()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _stop_loop(self) -> None:
        if self._loop_timer is not None:
            self.destroy_timer(self._loop_timer)
            self._loop_timer = None
        self.retract_now()

    def retract_now(self) -> None:
        """Command every finger retracted (deactivate, shutdown, exit)."""
        if self.backend is not None:
            try:
                count = len(self.joint_names)
                self.backend.write(np.zeros(count), np.ones(count, dtype=bool))
            except (BackendError, ValueError) as exc:
                self.get_logger().error(f'retract on stop failed: {exc}')

    def _teardown(self) -> None:
        for timer in self._periodic:
            self.destroy_timer(timer)
        self._periodic = []
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    # -- inputs --------------------------------------------------------------------------------

    def _on_command(self, msg: FingerCommands) -> None:
        error = self.guard.accept_command(msg.name, msg.position_m, msg.enable, time.monotonic())
        if error:
            self.get_logger().error(
                f'finger_commands rejected, nothing moved: {error}', throttle_duration_sec=1.0
            )
        elif self.guard.last_clamp and self.guard.clamped_commands:
            self.get_logger().warning(self.guard.last_clamp, throttle_duration_sec=1.0)

    def _on_safety(self, msg: SafetyStatus) -> None:
        self.guard.accept_safety(msg.state, time.monotonic())

    def _on_safe_stop(self, request, response):
        reason = request.reason or 'safe stop requested'
        self.guard.safe_stop(reason)
        self.get_logger().warning(f'safe stop: {reason}')
        response.success = True
        response.message = f'retracting at {self.guard.params.retract_speed_m_s} m/s: {reason}'
        self._publish_status()
        return response

    def _on_reset(self, request, response):
        ok, message = self.guard.reset(time.monotonic())
        if ok:
            reset_board = getattr(self.backend, 'reset_board', None)
            if reset_board is not None:
                reset_board()
        response.success, response.message = ok, message
        if ok:  # (rclpy refuses one call site logging at two severities)
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)
        self._publish_status()
        return response

    def _on_fault(self, msg: String) -> None:
        command = msg.data.strip()
        try:
            if command.split()[:1] == ['joint_states']:
                words = command.split()
                if len(words) != 2 or words[1] not in ('on', 'off'):
                    raise ValueError('joint_states takes on|off')
                self._mute_joint_states = words[1] == 'off'
                done = f'/joint_states {"frozen" if self._mute_joint_states else "flowing"}'
            else:
                inject = getattr(self.backend, 'inject', None)
                if inject is None:
                    raise ValueError(f'backend {self._param("backend")} takes no fault commands')
                done = inject(command)
        except (ValueError, IndexError) as exc:
            self.get_logger().error(f'sim_fault {command!r} refused: {exc}')
            return
        self.get_logger().warning(f'fault injected: {done}')

    # -- the loop ------------------------------------------------------------------------------

    def _tick(self) -> None:
        start = time.monotonic()
        if self._last_tick_wall is not None:
            self.tick_periods.append(start - self._last_tick_wall)
        self._last_tick_wall = start
        backend, guard = self.backend, self.guard
        sim = backend.sim_time_s is not None
        dt = self._dt if sim else (self.tick_periods[-1] if self.tick_periods else self._dt)
        output = guard.update(start, dt, self.state.position_m)
        if output.mode is not self._last_mode:
            self._log_mode(output.mode, output.reason)
        try:
            backend.write(output.position_m, output.enable)
            if sim:
                backend.step(self._dt)
            state = backend.read()
        except (BackendError, ValueError) as exc:
            guard.safe_stop(f'backend error: {exc}')
            self.get_logger().error(f'backend error: {exc}', throttle_duration_sec=1.0)
            return
        self.state = state
        guard.set_link(state.link_ok, 'link to the device lost: ' + '; '.join(state.fault_messages))
        board_faults = state.board_faults & ~HardwareStatus.FAULT_LINK
        if state.estop:
            guard.safe_stop('emergency stop at the board')
        elif board_faults:
            detail = '; '.join(state.fault_messages) or hex(board_faults)
            guard.safe_stop(f'board fault: {detail}')
        stalled = guard.check_following(dt, output.position_m, state.position_m, state.effort_n)
        if stalled:
            self.get_logger().error(stalled)
        stamp = self._stamp(state)
        if not self._mute_joint_states:
            msg = self._joint_msg
            msg.header.stamp = stamp
            msg.position = state.position_m.tolist()
            msg.velocity = state.velocity_m_s.tolist()
            msg.effort = state.effort_n.tolist()
            self._joint_pub.publish(msg)
        if self._clock_pub is not None:
            self._clock_pub.publish(ClockMsg(clock=stamp))
        if self._status_key() != self._last_status_key:
            self._publish_status()
        self.loop_compute_s.append(time.monotonic() - start)

    def _log_mode(self, mode: GuardMode, reason: str) -> None:
        self._last_mode = mode
        if mode is GuardMode.RETRACT:
            self.get_logger().warning(f'retracting: {reason}')
        elif mode is GuardMode.HOLD:
            self.get_logger().warning(reason)
        else:
            self.get_logger().info('following finger_commands')

    def _stamp(self, state: HardwareState):
        if self.backend.sim_time_s is not None:
            sec = math.floor(state.stamp_s)
            return Time(seconds=sec, nanoseconds=round((state.stamp_s - sec) * 1e9)).to_msg()
        return self.get_clock().now().to_msg()

    # -- status --------------------------------------------------------------------------------

    def _status_key(self):
        s = self.state
        return (s.link_ok, s.estop, s.board_faults, bool(self.guard.safe_stop_reason))

    def _publish_status(self) -> None:
        if self.state is None or self.guard is None:
            return
        s = self.state
        self._last_status_key = self._status_key()
        link = HardwareStatus.LINK_OK if s.link_ok else HardwareStatus.LINK_DISCONNECTED
        if s.link_ok and s.crc_errors and s.frames_rx and s.crc_errors > 0.05 * s.frames_rx:
            link = HardwareStatus.LINK_DEGRADED
        messages = list(s.fault_messages)
        if self.guard.safe_stop_reason:
            messages.append(f'safe stop: {self.guard.safe_stop_reason}')
        msg = HardwareStatus(
            backend=self._param('backend'),
            link=link,
            estop=bool(s.estop),
            safe_stopped=bool(self.guard.safe_stop_reason),
            board_faults=int(s.board_faults) | (0 if s.link_ok else HardwareStatus.FAULT_LINK),
            fault_messages=messages,
            finger_names=list(self.joint_names),
            finger_faults=[int(f) for f in s.finger_faults]
            if len(s.finger_faults) == len(self.joint_names)
            else [0] * len(self.joint_names),
            frames_rx=int(s.frames_rx),
            frames_tx=int(s.frames_tx),
            crc_errors=int(s.crc_errors),
            timeouts=int(s.timeouts),
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)

    def loop_statistics(self) -> dict:
        """Achieved loop rate and jitter over the last ticks (for diagnostics and benchmarks)."""
        periods = np.asarray(self.tick_periods)
        if periods.size < 2:
            return {}
        return {
            'rate_hz': float(1.0 / periods.mean()),
            'period_p99_ms': float(np.percentile(periods, 99) * 1e3),
            'jitter_ms': float(periods.std() * 1e3),
            'compute_p99_ms': float(np.percentile(np.asarray(self.loop_compute_s), 99) * 1e3),
        }

    def _publish_diagnostics(self) -> None:
        if self.state is None:
            return
        s, guard = self.state, self.guard
        stats = self.loop_statistics()
        level = DiagnosticStatus.OK
        if guard.safe_stop_reason or not s.link_ok or s.estop:
            level = DiagnosticStatus.ERROR
        elif guard.rejected_commands or guard.clamped_commands or s.crc_errors:
            level = DiagnosticStatus.WARN

        def kv(**values) -> list[KeyValue]:
            return [KeyValue(key=k, value=str(v)) for k, v in values.items()]

        board = DiagnosticStatus(
            level=level,
            name='hw_interface: device',
            hardware_id=self._param('backend'),
            message=guard.safe_stop_reason or ('link ok' if s.link_ok else 'link down'),
            values=kv(
                link_ok=s.link_ok,
                estop=s.estop,
                board_faults=hex(s.board_faults),
                frames_rx=s.frames_rx,
                frames_tx=s.frames_tx,
                crc_errors=s.crc_errors,
                timeouts=s.timeouts,
                rejected_commands=guard.rejected_commands,
                last_rejection=guard.last_rejection,
                clamped_commands=guard.clamped_commands,
                last_clamp=guard.last_clamp,
                mode=self._last_mode.value if self._last_mode else 'idle',
                **{k: f'{v:.3f}' for k, v in stats.items()},
            ),
        )
        # The simulated user's ground truth (mujoco backend only): what a scan should measure.
        truth_of = getattr(self.backend, 'simulation_truth', None)
        truth = truth_of() if truth_of is not None else {}
        fingers = [
            DiagnosticStatus(
                level=DiagnosticStatus.ERROR if s.finger_faults[i] else DiagnosticStatus.OK,
                name=f'hw_interface: {name}',
                hardware_id=name,
                message='fault' if s.finger_faults[i] else 'ok',
                values=kv(
                    position_m=f'{s.position_m[i]:.5f}',
                    load_n=f'{s.effort_n[i]:.2f}',
                    faults=hex(int(s.finger_faults[i])),
                    **{f'sim_{key}': f'{value[i]:.6g}' for key, value in truth.items()},
                    **({'sim_time_s': f'{s.stamp_s:.4f}'} if truth else {}),
                ),
            )
            for i, name in enumerate(self.joint_names)
            if i < len(s.finger_faults)
        ]
        msg = DiagnosticArray(status=[board, *fingers])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def _publish_heartbeat(self) -> None:
        self._heartbeat_seq += 1
        # DEGRADED = this node cannot drive the device (not configured, link down). A safe stop
        # is a commanded state, not a failure of the node: the heartbeat stays OK so the safety
        # monitor's reset is not blocked by the very stop it asked for.
        if self.backend is None:
            degraded, detail = True, 'not configured'
        elif self.state is not None and not self.state.link_ok:
            degraded, detail = True, 'link to the device down'
        else:
            degraded, detail = False, self.guard.safe_stop_reason if self.guard else ''
        msg = Heartbeat(
            node_name='hw_interface',
            state=Heartbeat.STATE_DEGRADED if degraded else Heartbeat.STATE_OK,
            sequence=self._heartbeat_seq,
            detail=detail,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._heartbeat_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Run hw_interface until SIGINT/SIGTERM; the fingers are commanded retracted on exit."""
    stop = runner.init(args)
    try:
        node = HwInterfaceNode()
    except (ParameterException, ValueError) as exc:
        print(f'hw_interface: bad parameter: {exc}', file=sys.stderr, flush=True)
        rclpy.shutdown()
        return 2
    try:
        runner.spin(node, stop, keep_going=lambda: node.exit_code is None)
    finally:
        node.retract_now()
        if node.backend is not None:
            node.backend.close()
        runner.shutdown(node)
    return node.exit_code or 0
