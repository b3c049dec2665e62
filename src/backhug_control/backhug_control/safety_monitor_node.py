"""The ``safety_monitor`` node: the independent watchdog of the whole device (its own process).

Subscribes ``/joint_states``, ``/hardware/status`` and ``/heartbeat``; judges them with
``SafetyRules`` at ``evaluate_rate_hz`` (100 Hz) on a STEADY clock (never sim time: a dead
simulator stops /clock, and the monitor must still see that); publishes ``/safety/status``
(TRANSIENT_LOCAL) on every change and at ``publish_rate_hz`` (20 Hz) with an increasing sequence.
When the verdict latches it calls ``/hw_interface/safe_stop`` with the reason, retrying every
``safe_stop_retry_s`` until hw_interface acknowledges.

Services: ``/safety_monitor/reset`` (std_srvs/Trigger: clears the latch only if every condition is
clear, then asks ``/hw_interface/reset`` to release its safe stop) and
``/safety_monitor/emergency_stop`` (std_srvs/Trigger: latches ESTOP).

Start-up: until /joint_states and a heartbeat of every watched node have been seen, the status is
FAULT, not latched, with ``waiting for ...`` reasons (nothing may move, no reset needed).
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
from std_srvs.srv import Trigger

from backhug_control import safety_rules as rules_module
from backhug_control.safety_rules import (
    HardwareSample,
    HeartbeatSample,
    JointSample,
    SafetyInputs,
    SafetyParameters,
    SafetyRules,
    Verdict,
)
from backhug_hw_interface import qos, runner
from backhug_interfaces.msg import HardwareStatus, Heartbeat, SafetyStatus
from backhug_interfaces.srv import SafeStop

NODE_NAME = 'safety_monitor'

_RULE_DESCRIPTIONS = {
    'load_limit_n': 'hard per-finger load ceiling, N (design.md §1: 180 N) -> FAULT',
    'load_warning_n': 'per-finger load warning level, N (top of the 20-150 N treatment range)',
    'total_load_limit_n': 'sum of all finger loads, N -> FAULT',
    'total_load_warning_n': 'sum of all finger loads, N -> WARNING',
    'rise_rate_limit_n_s': 'per-finger load rise rate, N/s -> FAULT',
    'rise_rate_window_s': 'window over which the rise rate is measured, s (sample time)',
    'rise_rate_min_load_n': 'the rise-rate rule applies above this load, N',
    'position_tolerance_m': 'tolerance around the joint limits, m -> FAULT',
    'joint_states_timeout_s': '/joint_states (or its stamp) older than this, wall s -> FAULT',
    'frozen_sample_timeout_s': 'bit-identical finger samples this long, s -> FAULT (0 = off)',
    'heartbeat_timeout_s': 'watched node silent this long, wall s -> FAULT',
    'hardware_status_timeout_s': '/hardware/status silent this long, wall s -> FAULT (0 = off)',
}


def _float(description: str, low: float, high: float, read_only: bool = True):
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_DOUBLE,
        description=description,
        read_only=read_only,
        floating_point_range=[FloatingPointRange(from_value=low, to_value=high)],
    )


#: Node parameters besides the rules: name -> (default, descriptor).
NODE_PARAMETERS = {
    'evaluate_rate_hz': (100.0, _float('rule evaluation rate (steady clock), Hz', 10.0, 1000.0)),
    'publish_rate_hz': (
        20.0,
        _float('periodic /safety/status rate (its heartbeat), Hz', 1.0, 200.0),
    ),
    'safe_stop_retry_s': (
        0.2,
        _float('retry period of /hw_interface/safe_stop until acknowledged, s', 0.01, 5.0),
    ),
    'reset_hw_interface': (
        True,
        ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL,
            description='after a successful reset, also ask /hw_interface/reset',
        ),
    ),
    'hardware': (
        'sim',
        ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING,
            description='backhug_description hardware whose fingers and limits to watch',
            read_only=True,
        ),
    ),
}


def _status_key(verdict: Verdict) -> tuple:
    """What makes a status new: state, latch, flags and the reasons without their numbers
    (ages such as 'missing for 0.32 s' change every cycle and are not a change of status)."""
    reasons = tuple(re.sub(r'[-+]?\d+(\.\d+)?', '#', r) for r in verdict.reasons)
    return (verdict.state, verdict.latched, verdict.finger_flags.tobytes(), reasons)


def _stamp_s(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


class SafetyMonitorNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        defaults = SafetyParameters()
        for name, (default, descriptor) in NODE_PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        for name, (low, high) in rules_module.RANGES.items():
            self.declare_parameter(
                name, float(getattr(defaults, name)), _float(_RULE_DESCRIPTIONS[name], low, high)
            )
        self.declare_parameter(
            'watched_nodes',
            list(defaults.watched_nodes),
            ParameterDescriptor(
                type=ParameterType.PARAMETER_STRING_ARRAY,
                description='nodes whose /heartbeat is required (missing -> FAULT)',
                read_only=True,
            ),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        params = SafetyParameters(
            **{name: float(self._param(name)) for name in rules_module.RANGES},
            watched_nodes=tuple(self._param('watched_nodes')),
        )
        from backhug_description import load_description

        joints = load_description(self._param('hardware')).joints
        self.finger_names = [j.name for j in joints]
        self.rules = SafetyRules(
            params,
            self.finger_names,
            lower_m=[j.lower_m for j in joints],
            upper_m=[j.upper_m for j in joints],
        )
        self._joint_buffer: list[JointSample] = []
        self._hardware: HardwareSample | None = None
        self._heartbeats: dict[str, HeartbeatSample] = {}
        self._status_seq = 0
        self._heartbeat_seq = 0
        self._published_key = None
        self.verdict: Verdict | None = None
        self._latched_at_msg = None
        self._safe_stop_pending = False
        self._safe_stop_reason = ''
        self._safe_stop_future = None
        self._safe_stop_last_call = -math.inf
        self.safe_stop_acknowledged = False
        self.latched_wall_s: float | None = None

        self._status_pub = self.create_publisher(SafetyStatus, qos.SAFETY_STATUS, qos.LATCHED_QOS)
        self._heartbeat_pub = self.create_publisher(Heartbeat, qos.HEARTBEAT, qos.HEARTBEAT_QOS)
        self.create_subscription(JointState, qos.JOINT_STATES, self._on_joint_state, qos.STATE_QOS)
        self.create_subscription(
            HardwareStatus, qos.HARDWARE_STATUS, self._on_hardware, qos.STATE_QOS
        )
        self.create_subscription(Heartbeat, qos.HEARTBEAT, self._on_heartbeat, qos.HEARTBEAT_QOS)
        self._safe_stop = self.create_client(SafeStop, qos.SAFE_STOP_SERVICE)
        self._hw_reset = self.create_client(Trigger, qos.HW_RESET_SERVICE)
        self.create_service(Trigger, qos.SAFETY_RESET_SERVICE, self._on_reset)
        self.create_service(Trigger, qos.EMERGENCY_STOP_SERVICE, self._on_emergency_stop)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        evaluate_period_s = 1.0 / self._param('evaluate_rate_hz')
        publish_period_s = 1.0 / self._param('publish_rate_hz')
        self.create_timer(evaluate_period_s, self._evaluate, clock=self._steady)
        self.create_timer(publish_period_s, self._publish_periodic, clock=self._steady)
        self.create_timer(0.05, self._publish_heartbeat, clock=self._steady)
        self._hw_reset_attempts = 0
        self._hw_reset_timer = None
        self.get_logger().info(
            f'watching {len(self.finger_names)} fingers and nodes {list(params.watched_nodes)}; '
            f'rules {dataclasses.asdict(params)}'
        )
        self._evaluate()

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            value = param.value
            if isinstance(value, float) and not math.isfinite(value):
                return SetParametersResult(
                    successful=False, reason=f'{param.name} must be finite, got {value}'
                )
        return SetParametersResult(successful=True)

    # -- inputs --------------------------------------------------------------------------------

    def _on_joint_state(self, msg: JointState) -> None:
        self._joint_buffer.append(
            JointSample(
                received_s=time.monotonic(),
                stamp_s=_stamp_s(msg.header.stamp),
                names=list(msg.name),
                position_m=np.asarray(msg.position, float),
                velocity_m_s=np.asarray(msg.velocity, float),
                effort_n=np.asarray(msg.effort, float),
            )
        )
        if len(self._joint_buffer) > 1000:  # evaluation starved: keep the newest
            del self._joint_buffer[:-1000]

    def _on_hardware(self, msg: HardwareStatus) -> None:
        self._hardware = HardwareSample(
            received_s=time.monotonic(),
            link=int(msg.link),
            estop=bool(msg.estop),
            board_faults=int(msg.board_faults),
            fault_messages=list(msg.fault_messages),
            finger_names=list(msg.finger_names),
            finger_faults=[int(x) for x in msg.finger_faults],
            safe_stopped=bool(msg.safe_stopped),
        )

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        if msg.node_name != NODE_NAME:
            self._heartbeats[msg.node_name] = HeartbeatSample(
                time.monotonic(), int(msg.state), msg.detail
            )

    # -- evaluation ----------------------------------------------------------------------------

    def _evaluate(self) -> None:
        samples, self._joint_buffer = self._joint_buffer, []
        was_latched = self.rules.latched
        verdict = self.rules.evaluate(
            SafetyInputs(tuple(samples), self._hardware, dict(self._heartbeats)),
            time.monotonic(),
        )
        self.verdict = verdict
        if verdict.latched and not was_latched:
            self._on_latch(verdict)
        if verdict.latched and self._safe_stop_pending:
            self._call_safe_stop()
        key = _status_key(verdict)
        if key != self._published_key:
            if self._published_key is None or key[:2] != self._published_key[:2]:
                state = rules_module.STATE_NAMES[verdict.state]
                text = f'safety {state}{" (latched)" if verdict.latched else ""}: '
                text += '; '.join(verdict.reasons)
                if verdict.motion_allowed:
                    self.get_logger().info(text)
                else:
                    self.get_logger().warning(text)
            self._publish_status()

    def _on_latch(self, verdict: Verdict) -> None:
        if self.latched_wall_s is None:
            self.latched_wall_s = time.monotonic()
            self._latched_at_msg = self.get_clock().now().to_msg()
        self._safe_stop_reason = 'safety_monitor: ' + '; '.join(verdict.reasons)[:500]
        self._safe_stop_pending = True
        self.safe_stop_acknowledged = False
        self._safe_stop_last_call = -math.inf

    def _call_safe_stop(self) -> None:
        now = time.monotonic()
        if self._safe_stop_future is not None and not self._safe_stop_future.done():
            if now - self._safe_stop_last_call < self._param('safe_stop_retry_s'):
                return
            self._safe_stop_future.cancel()
        elif now - self._safe_stop_last_call < self._param('safe_stop_retry_s'):
            return
        self._safe_stop_last_call = now
        if not self._safe_stop.service_is_ready():
            self.get_logger().error(
                f'{qos.SAFE_STOP_SERVICE} not available: retrying every '
                f'{self._param("safe_stop_retry_s")} s (hw_interface also retracts on its own '
                'when /safety/status is not OK)',
                throttle_duration_sec=2.0,
            )
            return
        future = self._safe_stop.call_async(SafeStop.Request(reason=self._safe_stop_reason))
        future.add_done_callback(self._on_safe_stop_done)
        self._safe_stop_future = future

    def _on_safe_stop_done(self, future) -> None:
        if future.cancelled():
            return
        try:
            response = future.result()
        except Exception as exc:
            self.get_logger().error(f'{qos.SAFE_STOP_SERVICE} failed: {exc}; retrying')
            return
        if response.success and self._safe_stop_pending:
            self._safe_stop_pending = False
            self.safe_stop_acknowledged = True
            self.get_logger().warning(f'hw_interface safe stop acknowledged: {response.message}')
        elif not response.success:
            self.get_logger().error(f'safe stop refused by hw_interface: {response.message}')

    # -- publication ---------------------------------------------------------------------------

    def _publish_status(self) -> None:
        verdict = self.verdict
        if verdict is None:
            return
        self._status_seq += 1
        msg = SafetyStatus(
            state=verdict.state,
            latched=verdict.latched,
            reasons=list(verdict.reasons),
            finger_names=list(self.finger_names),
            finger_flags=[int(x) for x in verdict.finger_flags],
            sequence=self._status_seq,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        if verdict.latched and self._latched_at_msg is not None:
            msg.latched_at = self._latched_at_msg
        self._status_pub.publish(msg)
        self._published_key = _status_key(verdict)

    def _publish_periodic(self) -> None:
        self._publish_status()

    def _publish_heartbeat(self, state: int = Heartbeat.STATE_OK) -> None:
        self._heartbeat_seq += 1
        msg = Heartbeat(node_name=NODE_NAME, state=state, sequence=self._heartbeat_seq)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._heartbeat_pub.publish(msg)

    # -- services ------------------------------------------------------------------------------

    def _on_reset(self, request, response):
        ok, message = self.rules.reset(time.monotonic())
        response.success, response.message = ok, message
        if ok:
            self._safe_stop_pending = False
            self.safe_stop_acknowledged = False
            self._latched_at_msg = None
            self.latched_wall_s = None
            self._evaluate()
            self._publish_status()
            if self._param('reset_hw_interface'):
                self._hw_reset_attempts = 0
                if self._hw_reset_timer is None:
                    self._hw_reset_timer = self.create_timer(
                        0.1, self._reset_hw_interface, clock=self._steady
                    )
                response.message += '; asking hw_interface to release its safe stop'
            self.get_logger().info(f'reset: {response.message}')
        else:
            self.get_logger().warning(message)
        return response

    def _reset_hw_interface(self) -> None:
        """Ask /hw_interface/reset a few times (it needs to have heard the OK status first)."""
        self._hw_reset_attempts += 1
        done = self._hw_reset_attempts > 50 or self.rules.latched  # 5 s
        if not done and self._hw_reset.service_is_ready():
            future = self._hw_reset.call_async(Trigger.Request())
            future.add_done_callback(self._on_hw_reset_done)
        if done and self._hw_reset_timer is not None:
            self.destroy_timer(self._hw_reset_timer)
            self._hw_reset_timer = None

    def _on_hw_reset_done(self, future) -> None:
        with contextlib.suppress(Exception):
            response = future.result()
            if not response.success:
                self.get_logger().warning(
                    f'hw_interface reset refused (retrying): {response.message}',
                    throttle_duration_sec=1.0,
                )
            elif self._hw_reset_timer is not None:
                self.get_logger().info(f'hw_interface reset: {response.message}')
                self.destroy_timer(self._hw_reset_timer)
                self._hw_reset_timer = None

    def _on_emergency_stop(self, request, response):
        self.rules.emergency_stop('software emergency stop (service)', time.monotonic())
        self._evaluate()
        self._on_latch(self.verdict)  # ask for the safe stop again, with the e-stop reason
        self._call_safe_stop()
        response.success = True
        response.message = 'emergency stop latched; reset needed'
        self.get_logger().error('software emergency stop')
        return response


def main(args: list[str] | None = None) -> int:
    """Run safety_monitor until SIGINT/SIGTERM."""
    stop = runner.init(args)
    try:
        node = SafetyMonitorNode()
    except (ValueError, ParameterException) as exc:  # bad parameter: name it, move nothing
        print(f'safety_monitor: invalid parameter: {exc}', file=sys.stderr, flush=True)
        rclpy.shutdown()
        return 2
    try:
        runner.spin(node, stop)
    finally:
        with contextlib.suppress(Exception):
            node._publish_heartbeat(Heartbeat.STATE_STOPPING)
        runner.shutdown(node)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
