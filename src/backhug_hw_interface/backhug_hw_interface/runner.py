"""How every BackHug node process runs: spin until SIGINT/SIGTERM, then say goodbye safely.

rclpy's own signal handler shuts the context down the moment SIGINT arrives; a timer firing in
that instant then fails with "publisher's context is invalid" and the node exits non-zero
without its last message — for finger_controllers and hw_interface that last message is the
retract. The nodes therefore install their own handlers (``init``), spin with a timeout so the
Python handler runs even when no timer fires (use_sim_time with /clock stopped), and send their
last messages on a context that is still valid before shutting it down themselves.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


def init(args: list[str] | None = None) -> threading.Event:
    """``rclpy.init`` without rclpy's signal handlers; the event is set by SIGINT/SIGTERM."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda _signum, _frame: stop.set())
    return stop


def spin(
    node,
    stop: threading.Event,
    executor: Executor | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> Executor:
    """Spin ``node`` until ``stop`` is set, the context ends or ``keep_going()`` is False."""
    executor = executor or SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok() and (keep_going is None or keep_going()):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return executor


def shutdown(node) -> None:
    """Destroy ``node`` and shut the context down (after the caller's last messages)."""
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
