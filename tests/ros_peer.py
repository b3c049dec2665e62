"""The other process of the cross-process interface tests.

``python ros_peer.py publish NAME...``: publishes the sample of each message type until killed.
``python ros_peer.py action_server``: serves RunProgram on /run_program with a short fake
program loop (feedback every 50 ms for 3 s), honouring cancel.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import rclpy
from rclpy.action import ActionServer, CancelResponse
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interface_samples import message_class, sample


def publish(names: list[str]) -> None:
    """Publish every named message type's sample at 20 Hz."""
    node = Node('interface_sample_publisher')
    pubs = [(node.create_publisher(message_class(n), f'sample/{n}', 10), n) for n in names]

    def tick() -> None:
        for pub, name in pubs:
            pub.publish(sample(message_class(name)))

    node.create_timer(0.05, tick)
    rclpy.spin(node)


def action_server() -> None:
    """Serve RunProgram with a 3 s program that reports progress."""
    from backhug_interfaces.action import RunProgram

    node = Node('fake_program_runner')

    def execute(goal_handle):
        duration = 3.0
        start = time.monotonic()
        feedback = RunProgram.Feedback(phase_name='warm_up', phase_count=1)
        while (elapsed := time.monotonic() - start) < duration:
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return RunProgram.Result(
                    outcome=RunProgram.Result.CANCELLED, reason='cancelled', duration_s=elapsed
                )
            feedback.elapsed_s = elapsed
            feedback.remaining_s = duration - elapsed
            feedback.progress = elapsed / duration
            feedback.intensity = goal_handle.request.intensity
            goal_handle.publish_feedback(feedback)
            time.sleep(0.05)
        goal_handle.succeed()
        return RunProgram.Result(
            outcome=RunProgram.Result.COMPLETED, duration_s=duration, completed_fraction=1.0
        )

    ActionServer(
        node,
        RunProgram,
        'run_program',
        execute_callback=execute,
        cancel_callback=lambda _goal: CancelResponse.ACCEPT,
    )
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    executor.spin()


def main() -> None:
    rclpy.init()
    try:
        if sys.argv[1] == 'publish':
            publish(sys.argv[2:])
        elif sys.argv[1] == 'action_server':
            action_server()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    main()
