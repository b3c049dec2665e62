"""The ``program_sequencer`` node: runs treatment programs and spine scans on the fingers.

- ``/run_program`` (backhug_interfaces/action/RunProgram). A goal is always accepted, then
  checked: program (library id / file path in ``program_id``, or YAML text in ``program_yaml``),
  intensity 0..1, user (height 1.2–2.2 m or 0 = ``default_user_height_m``, C7 on the bed or NaN,
  max force >= 0), the safety status, and that no program or scan owns the fingers. A goal that
  fails ends at once as aborted with outcome REJECTED and the reason (a plain reject would carry
  none to the client). Feedback at ``feedback_rate_hz``; cancel ramps down, then CANCELLED; a
  latched FAULT/ESTOP on ``/safety/status`` aborts at once with outcome ABORTED and its reasons.
- ``/finger_setpoints`` at ``setpoint_rate_hz`` on the node clock (simulated time under
  ``use_sim_time``): the program's clock advances with it. Idle: zero for every finger. While a
  spine scan runs, the scan publishes and this node stays silent.
- ``~/pause`` / ``~/resume`` (std_srvs/Trigger), ``~/set_intensity`` (SetIntensity): see
  ``runner.ProgramRunner`` for the ramps.
- ``/scan_spine``: the ScanSpineServer (spinemap) shares one motion lock with programs, so a scan
  and a program never run at once.
- ``/heartbeat`` at 20 Hz on a steady clock (alive even when simulated time stops).
"""

from __future__ import annotations

import math
import signal
import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from std_srvs.srv import Trigger

from backhug_hw_interface import qos
from backhug_interfaces.action import RunProgram
from backhug_interfaces.msg import FingerSetpoints, Heartbeat, SafetyStatus
from backhug_interfaces.srv import SetIntensity
from backhug_programs.compiler import CompiledProgram, compile_program
from backhug_programs.library import find_program
from backhug_programs.runner import ProgramRunner, RunState
from backhug_programs.schema import ProgramError, parse_program
from backhug_programs.spine_model import MAX_HEIGHT_M, MIN_HEIGHT_M, levels_for_user
from backhug_programs.spinemap.scan import FingerGeometry
from backhug_programs.spinemap.scan_server import ScanSpineServer

NODE_NAME = 'program_sequencer'


def _float(description: str, low: float, high: float, read_only: bool = False):
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        floating_point_range=[FloatingPointRange(from_value=low, to_value=high)],
    )


#: name → (default, descriptor); see config/program_sequencer.yaml for the reasons.
PARAMETERS = {
    'setpoint_rate_hz': (100.0, _float('rate of /finger_setpoints, Hz', 10.0, 500.0, True)),
    'feedback_rate_hz': (5.0, _float('RunProgram feedback rate (wall clock), Hz', 0.5, 50.0)),
    'heartbeat_rate_hz': (20.0, _float('/heartbeat rate (steady clock), Hz', 10.0, 100.0, True)),
    'max_force_rate_n_s': (200.0, _float('largest |dF/dt| of any setpoint, N/s', 10.0, 1000.0)),
    'pause_force_n': (5.0, _float('per-finger force held while paused, N', 0.0, 20.0)),
    'transition_ramp_s': (2.0, _float('ramp of pause, resume and cancel, s', 0.2, 10.0)),
    'intensity_rate_per_s': (0.1, _float('fastest intensity change, 1/s', 0.01, 1.0)),
    'default_user_height_m': (
        1.75,
        _float('height used when the goal says 0, m', MIN_HEIGHT_M, MAX_HEIGHT_M),
    ),
    'require_safety_status': (
        True,
        ParameterDescriptor(
            description='refuse programs until /safety/status has said OK or WARNING',
        ),
    ),
    'safety_status_wait_s': (
        5.0,
        _float('a goal waits this long for a first /safety/status, s', 0.0, 60.0),
    ),
    'device_config': (
        '',
        ParameterDescriptor(
            description='device config YAML (backhug_description); empty = the default',
            read_only=True,
        ),
    ),
    'stale_joint_states_s': (
        0.5,
        _float('a scan aborts when /joint_states stop for this long, s', 0.05, 5.0, True),
    ),
}


class ProgramSequencer(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self._params: dict[str, object] = {}
        self._refresh_parameters()
        self.add_post_set_parameters_callback(lambda _params: self._refresh_parameters())

        from backhug_description import load_description

        config = str(self.get_parameter('device_config').value) or None
        self.description = load_description('sim', config_path=config)
        self.joint_names = [joint.name for joint in self.description.joints]
        self._zeros = np.zeros(len(self.joint_names))

        self._motion_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._runner: ProgramRunner | None = None
        self._program_id = ''
        self._run_finished = threading.Event()
        self._safety_state: int | None = None
        self._safety_reason = ''
        self._safety_seen = threading.Event()
        self._last_tick: Time | None = None
        self._heartbeat_seq = 0

        self._setpoint_pub = self.create_publisher(
            FingerSetpoints, qos.FINGER_SETPOINTS, qos.STATE_QOS
        )
        self._heartbeat_pub = self.create_publisher(Heartbeat, qos.HEARTBEAT, qos.HEARTBEAT_QOS)
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, qos.DIAGNOSTICS, qos.STATE_QOS
        )
        services = MutuallyExclusiveCallbackGroup()
        actions = ReentrantCallbackGroup()
        self.create_subscription(
            SafetyStatus,
            qos.SAFETY_STATUS,
            self._on_safety_status,
            qos.LATCHED_QOS,
            callback_group=services,
        )
        self.create_service(Trigger, '~/pause', self._on_pause, callback_group=services)
        self.create_service(Trigger, '~/resume', self._on_resume, callback_group=services)
        self.create_service(
            SetIntensity, '~/set_intensity', self._on_set_intensity, callback_group=services
        )
        self._action_server = ActionServer(
            self,
            RunProgram,
            'run_program',
            execute_callback=self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=actions,
        )
        fingers = [
            FingerGeometry(joint.name, joint.side, joint.row, joint.spine_offset_m)
            for joint in self.description.joints
        ]
        self.scan = ScanSpineServer(
            self,
            fingers=fingers,
            publish_setpoints=self._publish,
            motion_lock=self._motion_lock,
            levels_for_user=lambda profile: levels_for_user(
                profile, self.description, float(self._params['default_user_height_m'])
            ),
            stale_joint_states_s=float(self.get_parameter('stale_joint_states_s').value),
        )
        rate = float(self._params['setpoint_rate_hz'])
        self._tick_timer = self.create_timer(
            1.0 / rate, self._tick, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self._heartbeat_timer = self.create_timer(
            1.0 / float(self._params['heartbeat_rate_hz']),
            self._heartbeat,
            callback_group=MutuallyExclusiveCallbackGroup(),
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self._diagnostics_timer = self.create_timer(
            1.0,
            self._diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.get_logger().info(
            f'ready: {len(self.joint_names)} fingers, setpoints at {rate:g} Hz, force rate '
            f'limit {self._params["max_force_rate_n_s"]:g} N/s'
        )

    def _refresh_parameters(self) -> None:
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}

    # -- publishing -----------------------------------------------------------------------------
    def _publish(self, names: list[str], force_n: np.ndarray, stamp: Time | None = None) -> None:
        msg = FingerSetpoints()
        msg.header.stamp = (stamp or self.get_clock().now()).to_msg()
        msg.name = list(names)
        msg.force_n = [float(f) for f in force_n]
        self._setpoint_pub.publish(msg)

    def publish_zero(self) -> None:
        """Zero force for every finger (the controllers retract softly)."""
        self._publish(self.joint_names, self._zeros)

    def _tick(self) -> None:
        """Setpoint loop on the node clock."""
        now = self.get_clock().now()
        dt = 0.0 if self._last_tick is None else (now - self._last_tick).nanoseconds * 1e-9
        self._last_tick = now
        if self.scan.active:
            return
        with self._run_lock:
            runner = self._runner
            if runner is None:
                if self._motion_lock.locked():
                    return  # a scan is starting or ending: it owns the setpoints
                forces = self._zeros
            else:
                try:
                    forces = runner.step(dt)
                except Exception as error:  # never let a bug keep a finger pushing
                    runner.abort(f'internal error in the program runner: {error!r}')
                    self.get_logger().error(runner.reason)
                    forces = self._zeros
                if runner.state.finished:
                    self._run_finished.set()
        self._publish(self.joint_names, forces, now)  # stamped with the time it was computed for

    def _heartbeat(self) -> None:
        self._heartbeat_seq += 1
        with self._run_lock:
            runner = self._runner
            if runner is not None:
                detail = f'{self._program_id} {runner.state.value} {100 * runner.progress:.0f} %'
            elif self.scan.active:
                detail = 'scanning'
            else:
                detail = 'idle'
        msg = Heartbeat(
            node_name=NODE_NAME,
            state=Heartbeat.STATE_OK,
            sequence=self._heartbeat_seq,
            detail=detail,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._heartbeat_pub.publish(msg)

    def _diagnostics(self) -> None:
        """1 Hz summary on /diagnostics: what runs, how far, the safety state seen."""
        status = DiagnosticStatus(name=f'{NODE_NAME}: sequencer', hardware_id='backhug')
        with self._run_lock:
            runner = self._runner
            values = {'program': self._program_id if runner else '', 'scan': str(self.scan.active)}
            if runner is not None:
                values.update(
                    state=runner.state.value,
                    progress=f'{runner.progress:.3f}',
                    elapsed_s=f'{runner.program_t_s:.1f}',
                    intensity=f'{runner.intensity:.2f}',
                    max_setpoint_n=f'{float(np.max(runner.output, initial=0.0)):.1f}',
                )
        refusal = self._safety_refusal()
        values['safety_state'] = str(self._safety_state)
        status.level = DiagnosticStatus.WARN if refusal else DiagnosticStatus.OK
        if runner is not None:
            status.message = f'{values["program"]} {values["state"]}'
        else:
            status.message = 'scanning' if self.scan.active else 'idle'
        if refusal:
            status.message += f'; programs refused: {refusal}'
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(msg)

    # -- safety ---------------------------------------------------------------------------------
    def _on_safety_status(self, status: SafetyStatus) -> None:
        latched = status.state in (SafetyStatus.FAULT, SafetyStatus.ESTOP)
        if status.state != self._safety_state:
            self.get_logger().info(
                f'safety status {status.state} ({"; ".join(status.reasons) or "no reasons"})'
            )
        self._safety_state = status.state
        self._safety_seen.set()
        name = 'ESTOP' if status.state == SafetyStatus.ESTOP else 'FAULT'
        self._safety_reason = f'safety {name}: ' + ('; '.join(status.reasons) or 'no reason given')
        self.scan.on_safety_status(status)
        if latched:
            with self._run_lock:
                runner = self._runner
                if runner is not None and not runner.state.finished:
                    runner.abort(self._safety_reason)
                    self._run_finished.set()
                    self.get_logger().error(f'program {self._program_id} aborted: {runner.reason}')
            if runner is not None or not self._motion_lock.locked():
                self._publish(self.joint_names, self._zeros)

    def _safety_refusal(self) -> str:
        """Why no program may start now, or ''."""
        if self._safety_state in (SafetyStatus.FAULT, SafetyStatus.ESTOP):
            return f'{self._safety_reason} (latched: reset the safety monitor first)'
        if self._safety_state is None and self._params['require_safety_status']:
            return 'no /safety/status received yet (is safety_monitor running?)'
        return ''

    # -- the action -------------------------------------------------------------------------------
    def _compile_goal(self, goal: RunProgram.Goal) -> CompiledProgram:
        """The goal's program compiled for its user; ValueError/ProgramError naming the problem."""
        if goal.program_yaml.strip():
            program = parse_program(goal.program_yaml, '<goal program_yaml>')
        elif goal.program_id.strip():
            program = find_program(goal.program_id.strip())
        else:
            raise ValueError('the goal names no program: set program_id or program_yaml')
        user = goal.user
        height = user.height_m
        if not math.isfinite(height) or (
            height != 0.0 and not MIN_HEIGHT_M <= height <= MAX_HEIGHT_M
        ):
            raise ValueError(
                f'user height_m must be {MIN_HEIGHT_M}–{MAX_HEIGHT_M} m (0 = default), '
                f'got {height!r}'
            )
        return compile_program(
            program,
            user,
            goal.intensity,
            self.description,
            max_force_rate_n_s=float(self._params['max_force_rate_n_s']),
            default_height_m=float(self._params['default_user_height_m']),
        )

    def _execute(self, goal_handle) -> RunProgram.Result:
        goal: RunProgram.Goal = goal_handle.request
        result = RunProgram.Result()

        def reject(reason: str) -> RunProgram.Result:
            self.get_logger().warning(f'run_program goal rejected: {reason}')
            goal_handle.abort()
            result.outcome, result.reason = RunProgram.Result.REJECTED, reason
            return result

        try:
            compiled = self._compile_goal(goal)
        except (ProgramError, ValueError) as error:
            return reject(str(error))
        except Exception as error:  # a malformed goal must not take the node down
            return reject(f'invalid goal: {error!r}')
        if self._params['require_safety_status']:
            # At bring-up the goal may come before safety_monitor's first status: wait a little.
            self._safety_seen.wait(float(self._params['safety_status_wait_s']))
        refusal = self._safety_refusal()
        if refusal:
            return reject(refusal)
        if not self._motion_lock.acquire(blocking=False):
            busy = f'program {self._program_id}' if self._runner else 'a spine scan'
            return reject(f'busy: {busy} is running; cancel it first')
        try:
            runner = ProgramRunner(
                compiled,
                max_force_rate_n_s=float(self._params['max_force_rate_n_s']),
                pause_force_n=float(self._params['pause_force_n']),
                transition_ramp_s=float(self._params['transition_ramp_s']),
                intensity_rate_per_s=float(self._params['intensity_rate_per_s']),
            )
            with self._run_lock:
                self._run_finished.clear()
                self._runner = runner
                self._program_id = compiled.program.id
            scaled = [
                f'{phase.name} x{compiled.load_scale(phase):.2f}'
                for phase in compiled.phases
                if compiled.load_scale(phase) < 1.0
            ]
            weight = goal.user.weight_kg
            self.get_logger().info(
                f'running {compiled.program.id} ({compiled.duration_s:.0f} s) at intensity '
                f'{compiled.intensity:g} for a {compiled.model.height_m:g} m, '
                + (f'{weight:g} kg user' if weight else 'unknown-weight user')
                + f' (summed force at most {compiled.max_total_force_n:.0f} N)'
                + (
                    f'; out of reach: {", ".join(compiled.out_of_reach)}'
                    if compiled.out_of_reach
                    else ''
                )
                + (f'; scaled to the weight: {", ".join(scaled)}' if scaled else '')
            )
            return self._supervise(goal_handle, runner, result)
        finally:
            with self._run_lock:
                self._runner = None
            self._motion_lock.release()

    def _supervise(self, goal_handle, runner: ProgramRunner, result) -> RunProgram.Result:
        """Feedback until the runner finishes; then the result."""
        feedback = RunProgram.Feedback()
        cancel_sent = False
        phase_count = len(runner.compiled.phases)
        while True:
            if goal_handle.is_cancel_requested and not cancel_sent:
                with self._run_lock:
                    runner.cancel()
                cancel_sent = True
                self.get_logger().info(f'program {self._program_id}: cancel, ramping down')
            if not rclpy.ok(context=self.context):
                with self._run_lock:
                    runner.abort('program_sequencer is shutting down')
            with self._run_lock:
                state = runner.state
                t = runner.program_t_s
                phase = runner.compiled.phase_at(min(t, runner.duration_s))
                feedback.phase_name = phase.name if phase else ''
                feedback.phase_index = phase.index if phase else 0
                feedback.phase_count = phase_count
                feedback.progress = runner.progress
                feedback.elapsed_s = t
                feedback.remaining_s = max(0.0, runner.duration_s - t)
                feedback.intensity = runner.intensity
                feedback.paused = state is RunState.PAUSED
            if state.finished:
                break
            goal_handle.publish_feedback(feedback)
            self._run_finished.wait(1.0 / float(self._params['feedback_rate_hz']))
        result.duration_s = runner.program_t_s
        result.completed_fraction = runner.progress
        result.reason = runner.reason if state is not RunState.COMPLETED else ''
        if state is RunState.COMPLETED:
            result.outcome = RunProgram.Result.COMPLETED
            goal_handle.succeed()
        elif state is RunState.CANCELLED and goal_handle.is_cancel_requested:
            result.outcome = RunProgram.Result.CANCELLED
            goal_handle.canceled()
        else:
            result.outcome = RunProgram.Result.ABORTED
            goal_handle.abort()
        self.get_logger().info(
            f'program {self._program_id} {state.value} after {runner.program_t_s:.1f} s'
            + (f': {result.reason}' if result.reason else '')
        )
        return result

    # -- services -------------------------------------------------------------------------------
    def _on_pause(self, _request, response: Trigger.Response) -> Trigger.Response:
        with self._run_lock:
            runner = self._runner
            why = 'no program is running' if runner is None else runner.pause()
        response.success = not why
        response.message = why or f'paused; holding at most {self._params["pause_force_n"]:g} N'
        self.get_logger().info(f'pause: {response.message}')
        return response

    def _on_resume(self, _request, response: Trigger.Response) -> Trigger.Response:
        with self._run_lock:
            runner = self._runner
            why = 'no program is running' if runner is None else runner.resume()
        if not why:
            refusal = self._safety_refusal()
            if refusal:  # resuming would push again: not while the safety status forbids it
                with self._run_lock:
                    runner.pause()
                why = refusal
        response.success = not why
        response.message = why or 'resumed'
        self.get_logger().info(f'resume: {response.message}')
        return response

    def _on_set_intensity(self, request, response: SetIntensity.Response):
        with self._run_lock:
            runner = self._runner
            try:
                if runner is None:
                    raise ValueError('no program is running')
                response.ramp_time_s = runner.set_intensity(request.intensity)
                response.success = True
                response.message = (
                    f'intensity {runner.intensity:.2f} → {request.intensity:.2f} over '
                    f'{response.ramp_time_s:.1f} s'
                )
            except (ValueError, ProgramError) as error:
                response.success, response.message = False, str(error)
        self.get_logger().info(f'set_intensity: {response.message}')
        return response

    def destroy_node(self) -> None:
        self.scan.destroy()
        self._action_server.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; on the way out every setpoint goes to zero."""
    # rclpy's own SIGINT handler would shut the context down before the zero setpoints go out:
    # handle the signals here instead. The executor is spun with a timeout so the Python signal
    # handler runs even when no timer fires (use_sim_time with /clock stopped).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    node = None
    executor = MultiThreadedExecutor(num_threads=4)
    try:
        node = ProgramSequencer()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except InvalidHandle:
                # The scan's /joint_states subscription, destroyed by the scan's thread as the
                # scan ends, was being added to this thread's wait set; the next wait set no
                # longer holds it. Seen under load in test_system_spinemap: the node died.
                continue
    except ExternalShutdownException:
        pass
    finally:
        if node is not None and rclpy.ok():
            with node._run_lock:
                if node._runner is not None:
                    node._runner.abort('program_sequencer is shutting down')
                    node._run_finished.set()
            node.publish_zero()  # the controllers retract softly
            node.get_logger().info('stopped: zero setpoints published')
        executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
