"""Workspace-wide pytest setup: DDS isolation per test process and helpers to spin ROS nodes.

Every pytest process reserves its own ROS_DOMAIN_ID (1..100, through ros-domain-coordinator's
port lock) and keeps discovery on localhost, so two test runs on one machine never see each
other's messages. Child processes started by tests inherit both.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

_domain_ctx: contextlib.AbstractContextManager | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Reserve a DDS domain for this process before any test imports rclpy."""
    global _domain_ctx
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    try:
        from domain_coordinator import domain_id
    except ImportError:  # pure-logic tests can run without the ROS environment
        return
    start = random.Random(os.getpid()).randrange(100)

    def selector(state=[start]):  # noqa: B006 - a tiny counter
        state[0] += 1
        return state[0] % 100 + 1

    _domain_ctx = domain_id(selector)
    os.environ['ROS_DOMAIN_ID'] = str(_domain_ctx.__enter__())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _domain_ctx is not None:
        _domain_ctx.__exit__(None, None, None)


def pytest_report_header(config: pytest.Config) -> str:
    return f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID")} (reserved for this process)'


@pytest.fixture
def ros_context() -> Iterator[object]:
    """An initialised rclpy context of its own, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=context)


@pytest.fixture
def spin_nodes(ros_context) -> Iterator[Callable[..., object]]:
    """Spin nodes in a MultiThreadedExecutor on a background thread.

    Usage: ``executor = spin_nodes(node_a, node_b)``. Nodes are destroyed after the test.
    """
    from rclpy.executors import MultiThreadedExecutor

    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    nodes: list = []
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)

    def add(*new_nodes):
        for node in new_nodes:
            executor.add_node(node)
            nodes.append(node)
        if not thread.is_alive():
            thread.start()
        return executor

    try:
        yield add
    finally:
        stop.set()
        thread.join(timeout=5)
        for node in nodes:
            with contextlib.suppress(Exception):
                executor.remove_node(node)
                node.destroy_node()
        executor.shutdown(timeout_sec=1)


def wait_for(
    predicate: Callable[[], bool], timeout_s: float = 10.0, period_s: float = 0.01
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` of wall time passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()


@pytest.fixture
def wait() -> Callable[..., bool]:
    """The ``wait_for`` helper as a fixture."""
    return wait_for
