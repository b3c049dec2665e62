"""activate(): a real rclpy lifecycle node brought to active over its services."""

from __future__ import annotations

import pytest
from backhug_bringup.lifecycle import LifecycleError, activate
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node


class Device(LifecycleNode):
    """A lifecycle node whose configure succeeds or fails on request."""

    def __init__(self, name: str, context, configure_ok: bool = True) -> None:
        super().__init__(name, context=context)
        self.configure_ok = configure_ok
        self.transitions: list[str] = []

    def on_configure(self, state):
        self.transitions.append('configure')
        return (
            TransitionCallbackReturn.SUCCESS
            if self.configure_ok
            else TransitionCallbackReturn.FAILURE
        )

    def on_activate(self, state):
        self.transitions.append('activate')
        return super().on_activate(state)


def test_unconfigured_node_is_configured_then_activated_and_active_is_a_no_op(
    ros_context, spin_nodes
):
    device = Device('device_ok', ros_context)
    caller = Node('caller', context=ros_context)
    spin_nodes(device, caller)
    activate(caller, 'device_ok', timeout_s=20)
    assert device.transitions == ['configure', 'activate']
    activate(caller, 'device_ok', timeout_s=20)
    assert device.transitions == ['configure', 'activate']


def test_failures_name_the_node_and_the_step(ros_context, spin_nodes):
    device = Device('device_bad', ros_context, configure_ok=False)
    caller = Node('caller', context=ros_context)
    spin_nodes(device, caller)
    with pytest.raises(LifecycleError, match='device_bad: configure failed, now unconfigured'):
        activate(caller, 'device_bad', timeout_s=20)
    with pytest.raises(LifecycleError, match='absent: no /absent/get_state service after 1 s'):
        activate(caller, 'absent', timeout_s=1)
