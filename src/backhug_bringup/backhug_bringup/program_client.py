"""A small RunProgram action client: the launch file's ``program:=`` argument runs one through it.

    ros2 run backhug_bringup run_program full_back --intensity 0.6 --height 1.75

Waits for the ``/run_program`` server (program_sequencer), sends the goal, prints the phase and
progress as feedback comes in, and exits 0 if the program completed, 1 if it did not (cancelled,
aborted, rejected: the reason is printed), 2 on bad arguments or no server. Ctrl-C cancels the
goal, so the fingers ramp down and retract.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time

RUN_PROGRAM_ACTION = '/run_program'
GOAL_RESPONSE_TIMEOUT_S = 15.0  # accept/reject is immediate on a live sequencer
SERVER_LOST_S = 5.0  # the server gone from the graph this long: give up, do not hang


def _spin_until_done(node, client, future, timeout_s: float | None = None) -> str:
    """Spin until ``future`` is done: 'done', 'timeout', or 'lost' (the server left the graph)."""
    import rclpy

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    lost_since = None
    while not future.done():
        rclpy.spin_once(node, timeout_sec=0.1)
        if client.server_is_ready():
            lost_since = None
        elif lost_since is None:
            lost_since = time.monotonic()
        elif time.monotonic() - lost_since > SERVER_LOST_S:
            return 'lost'
        if deadline is not None and time.monotonic() > deadline:
            return 'timeout'
    return 'done'


def build_goal(
    program: str, intensity: float, height_m: float, user_id: str = '', weight_kg: float = 0.0
) -> object:
    """A RunProgram goal; ValueError naming the argument if it is out of range."""
    from backhug_interfaces.action import RunProgram

    if not program:
        raise ValueError('program: give a program id (e.g. full_back)')
    if not (math.isfinite(intensity) and 0.0 <= intensity <= 1.0):
        raise ValueError(f'intensity: must be within 0..1, got {intensity}')
    if not (math.isfinite(height_m) and 1.2 <= height_m <= 2.2):
        raise ValueError(f'height: must be within 1.2..2.2 m, got {height_m}')
    if not (weight_kg == 0.0 or (math.isfinite(weight_kg) and 30.0 <= weight_kg <= 250.0)):
        raise ValueError(f'weight: must be within 30..250 kg (0 = unknown), got {weight_kg}')
    goal = RunProgram.Goal(program_id=program, intensity=float(intensity))
    goal.user.user_id = user_id
    goal.user.height_m = float(height_m)
    goal.user.c7_position_m = math.nan  # unknown: the sequencer estimates it from the height
    goal.user.max_force_n = 0.0  # the device default
    goal.user.weight_kg = float(weight_kg)  # bounds the summed force (compiler budget)
    return goal


def main(argv: list[str] | None = None) -> int:
    """Run one program to its end; see the module docstring."""
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.utilities import remove_ros_args

    from backhug_interfaces.action import RunProgram

    arguments = remove_ros_args(sys.argv if argv is None else ['run_program', *argv])[1:]
    parser = argparse.ArgumentParser(prog='run_program', description=__doc__.splitlines()[0])
    parser.add_argument('program', help='program id from the library, e.g. full_back')
    parser.add_argument('--intensity', type=float, default=0.5, help='0..1 (default 0.5)')
    parser.add_argument('--height', type=float, default=1.75, help='user height, m (1.75)')
    parser.add_argument('--weight', type=float, default=0.0, help='user weight, kg (0 = unknown)')
    parser.add_argument('--user', default='', help='user id (for the spine map history)')
    parser.add_argument(
        '--server-timeout', type=float, default=60.0, help='s to wait for program_sequencer'
    )
    args = parser.parse_args(arguments)
    try:
        goal = build_goal(args.program, args.intensity, args.height, args.user, args.weight)
    except ValueError as exc:
        print(f'run_program: {exc}', file=sys.stderr)
        return 2

    # rclpy's own SIGINT handler would shut the context down before the cancel could be sent:
    # take SIGINT (Ctrl-C, launch's first signal) and SIGTERM as KeyboardInterrupt instead.
    rclpy.init(
        args=sys.argv if argv is None else None,
        signal_handler_options=rclpy.signals.SignalHandlerOptions.NO,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    node = rclpy.create_node('run_program')
    client = ActionClient(node, RunProgram, RUN_PROGRAM_ACTION)
    goal_handle = None
    try:
        if not client.wait_for_server(timeout_sec=args.server_timeout):
            print(
                f'run_program: no {RUN_PROGRAM_ACTION} action server after '
                f'{args.server_timeout:.0f} s (is program_sequencer running?)',
                file=sys.stderr,
            )
            return 2
        last = {'phase': None, 'time': 0.0}

        def on_feedback(message) -> None:
            feedback = message.feedback
            now = time.monotonic()
            if feedback.phase_index != last['phase'] or now - last['time'] > 5.0:
                node.get_logger().info(
                    f'phase {feedback.phase_index + 1}/{feedback.phase_count} '
                    f'"{feedback.phase_name}", {feedback.progress * 100:.0f} %, '
                    f'{feedback.remaining_s:.0f} s left'
                )
                last.update(phase=feedback.phase_index, time=now)

        future = client.send_goal_async(goal, feedback_callback=on_feedback)
        state = _spin_until_done(node, client, future, GOAL_RESPONSE_TIMEOUT_S)
        if state != 'done':
            print(
                f'run_program: no answer to the goal from {RUN_PROGRAM_ACTION} ({state})',
                file=sys.stderr,
            )
            return 1
        goal_handle = future.result()
        if goal_handle is None or not goal_handle.accepted:
            print(f'run_program: goal for {args.program!r} was rejected', file=sys.stderr)
            return 1
        result_future = goal_handle.get_result_async()
        if _spin_until_done(node, client, result_future) != 'done':
            print(
                f'run_program: {RUN_PROGRAM_ACTION} server left while {args.program!r} was '
                'running (program_sequencer died?)',
                file=sys.stderr,
            )
            goal_handle = None
            return 1
        result = result_future.result().result
        goal_handle = None
        names = {0: 'completed', 1: 'cancelled', 2: 'aborted', 3: 'rejected'}
        outcome = names.get(result.outcome, str(result.outcome))
        node.get_logger().info(
            f'{args.program}: {outcome} after {result.duration_s:.0f} s '
            f'({result.completed_fraction * 100:.0f} %)'
            + (f': {result.reason}' if result.reason else '')
        )
        return 0 if result.outcome == RunProgram.Result.COMPLETED else 1
    except KeyboardInterrupt:
        if goal_handle is not None:
            # The sequencer ramps the fingers down and retracts; wait for it to say so.
            cancel = goal_handle.cancel_goal_async()
            rclpy.spin_until_future_complete(node, cancel, timeout_sec=5.0)
            accepted = cancel.done() and len(cancel.result().goals_canceling) > 0
            print(
                f'run_program: {args.program!r} '
                + ('cancelled' if accepted else 'interrupted (the cancel was not confirmed)'),
                file=sys.stderr,
            )
        return 1
    finally:
        client.destroy()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    sys.exit(main())
