"""hw_interface over real DDS on the MuJoCo device: loads, guards, safe stop and reset.

The node runs as its own process, as in the system; a peer node in the test plays the safety
monitor (SafetyStatus at 20 Hz) and the controllers (FingerCommands at 100 Hz) and reads the
node's /joint_states, /hardware/status and /diagnostics. Every guard test injects its fault and
checks that the fingers end retracted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from std_srvs.srv import Trigger

from backhug_interfaces.msg import HardwareStatus, SafetyStatus
from backhug_interfaces.srv import SafeStop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hw_node_support import (
    RETRACTED_M,
    Peer,
    assert_retracts,
    contact_heights_and_weight,
    raise_fingers,
    start_node,
    stop_node,
    touching_targets,
)


@pytest.fixture
def system(ros_context, spin_nodes, wait):
    process = start_node()
    peer = Peer(ros_context)
    spin_nodes(peer.node)
    try:
        assert wait(lambda: len(peer.joint_states) > 5, 30.0), 'no /joint_states from hw_interface'
        peer.names = list(peer.latest().name)
        peer.targets = np.zeros(len(peer.names))
        yield process, peer
    finally:
        output = stop_node(process)
        if os.environ.get('BACKHUG_TEST_VERBOSE'):
            print(output)


@pytest.fixture(scope='module')
def contact_heights() -> tuple[np.ndarray, float]:
    return contact_heights_and_weight()


def test_touching_fingers_carry_the_simulated_body_weight(system, contact_heights, wait) -> None:
    _process, peer = system
    heights, weight_n = contact_heights
    raise_fingers(peer, heights, wait, sim_s=3.0)

    def at_rest() -> bool:  # the torso has stopped bouncing: the sum is steady over 0.5 s
        with peer.lock:
            sums = [sum(m.effort) for m in peer.joint_states[-100:]]
        return len(sums) == 100 and float(np.std(sums)) < 0.002 * float(np.mean(sums))

    assert wait(at_rest, 60.0), 'the loads never settled'
    with peer.lock:
        total = float(np.mean([sum(m.effort) for m in peer.joint_states[-100:]]))
    assert wait(lambda: peer.diag('rejected_commands') == '0', 5.0)
    print(f'\nload sum {total:.1f} N vs body weight {weight_n:.1f} N ({total / weight_n:.4f})')
    assert total == pytest.approx(weight_n, rel=0.02)
    assert peer.status is not None and peer.status.link == HardwareStatus.LINK_OK
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in peer.joint_states]
    assert np.all(np.diff(stamps) > 0), '/joint_states stamps must advance in simulated time'


def test_stale_commands_are_held_then_retracted(system, contact_heights, wait) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    peer.send_commands = False
    assert_retracts(peer, wait, 'controllers silent')


def test_no_safety_status_means_no_motion_and_retract(system, contact_heights, wait) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    peer.send_safety = False
    assert_retracts(peer, wait, 'safety monitor silent')
    # Commands keep coming, but without a safety monitor nothing rises again.
    time.sleep(1.0)
    assert peer.positions().max() < RETRACTED_M
    # A monitor that comes back (restarted after a crash) does not resume motion by itself.
    peer.send_safety = True
    time.sleep(1.0)
    assert peer.positions().max() < RETRACTED_M, 'motion resumed without a reset'
    assert peer.status.safe_stopped
    assert peer.call(peer.reset, Trigger.Request()).success
    assert wait(lambda: peer.positions().max() > 0.005, 20.0), 'no motion after the reset'


def test_safety_fault_retracts(system, contact_heights, wait) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    peer.safety_state = SafetyStatus.FAULT
    assert_retracts(peer, wait, 'safety FAULT')


def test_bad_commands_are_rejected_without_motion(system, wait) -> None:
    _process, peer = system
    count = len(peer.names)
    peer.targets = np.full(count, np.nan)
    assert wait(lambda: 'must be finite' in peer.diag('last_rejection'), 10.0)
    peer.targets = np.full(count - 1, 0.02)  # 26 names, 25 positions
    assert wait(lambda: 'differ in length' in peer.diag('last_rejection'), 10.0)
    peer.names, peer.enable = peer.names[:-1], [True] * (count - 1)  # a joint missing
    assert wait(lambda: 'the device has 26' in peer.diag('last_rejection'), 10.0)
    time.sleep(0.5)
    assert peer.positions().max() < RETRACTED_M, 'a rejected command moved a finger'


def test_targets_beyond_the_limits_are_clamped_and_reported(system, wait) -> None:
    _process, peer = system
    peer.targets = np.full(len(peer.names), 0.5)
    peer.targets[1] = -0.2
    assert wait(lambda: 'clamped' in peer.diag('last_clamp'), 10.0)
    assert int(peer.diag('clamped_commands')) > 3
    start = peer.sim_time_s
    assert wait(lambda: peer.sim_time_s > start + 2.0, 30.0)
    positions = peer.positions()
    assert positions.max() <= 0.040 + 1e-4, 'a finger went beyond its upper limit'
    assert positions[1] >= -1e-4


def test_safe_stop_holds_until_reset_which_needs_a_clear_safety_status(
    system, contact_heights, wait
) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    answer = peer.call(peer.safe_stop, SafeStop.Request(reason='test: load spike'))
    assert answer.success
    assert_retracts(peer, wait, 'safe_stop service')
    assert wait(lambda: peer.status.safe_stopped, 5.0)
    assert 'load spike' in ' '.join(peer.status.fault_messages)
    peer.safety_state = SafetyStatus.FAULT
    time.sleep(0.2)
    refused = peer.call(peer.reset, Trigger.Request())
    assert not refused.success and 'FAULT' in refused.message
    assert peer.positions().max() < RETRACTED_M
    peer.safety_state = SafetyStatus.OK
    time.sleep(0.2)
    accepted = peer.call(peer.reset, Trigger.Request())
    assert accepted.success, accepted.message
    assert wait(lambda: peer.positions().max() > 0.01, 20.0), 'no motion after a reset'


def test_board_estop_retracts_and_needs_a_reset(system, contact_heights, wait) -> None:
    from std_msgs.msg import String

    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    faults = peer.node.create_publisher(String, '/hw_interface/sim_fault', 10)
    time.sleep(0.3)
    faults.publish(String(data='estop on'))
    assert_retracts(peer, wait, 'board emergency stop')
    assert wait(lambda: peer.status.estop and peer.status.safe_stopped, 5.0)
    faults.publish(String(data='estop off'))
    assert wait(lambda: not peer.status.estop, 5.0)
    time.sleep(1.0)
    assert peer.positions().max() < RETRACTED_M, 'moved after e-stop release without reset'
    assert peer.call(peer.reset, Trigger.Request()).success


@pytest.mark.parametrize('fault', ['stall', 'freeze'])
def test_a_finger_not_following_its_target_latches_a_safe_stop_naming_it(
    system, contact_heights, wait, fault
) -> None:
    """A jammed motor or a frozen position sensor on a raised finger: asked to retract, it does
    not (or does not seem to). hw_interface latches a safe stop naming it, retracts the others,
    and needs a reset once the fault is cleared."""
    from std_msgs.msg import String

    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait, sim_s=1.0)
    index = int(np.argmax(peer.positions()))
    name, raised = peer.names[index], float(peer.positions()[index])
    assert raised > 0.01
    faults = peer.node.create_publisher(String, '/hw_interface/sim_fault', 10)
    time.sleep(0.3)
    faults.publish(String(data=f'{fault} {name}'))
    time.sleep(0.3)
    peer.targets = np.zeros(len(peer.names))  # the controllers retract; this finger cannot follow

    def latched() -> bool:
        status = peer.status
        return bool(
            status.safe_stopped
            and any('not following' in m and name in m for m in status.fault_messages)
        )

    assert wait(latched, 15.0), f'no safe stop naming {name}: {peer.status.fault_messages}'
    others = np.delete(np.arange(len(peer.names)), index)
    assert wait(lambda: peer.positions()[others].max() < RETRACTED_M, 15.0)
    # (the jammed finger gives a little under the trunk the others no longer carry)
    assert peer.positions()[index] > 0.5 * raised, 'the injected fault did not hold the finger'
    faults.publish(String(data='clear'))
    assert_retracts(peer, wait, f'{fault} cleared')
    time.sleep(0.5)
    assert peer.status.safe_stopped, 'the stall latch cleared itself without a reset'
    assert peer.call(peer.reset, Trigger.Request()).success
    peer.targets = touching_targets(contact_heights[0])
    assert wait(lambda: peer.positions().max() > 0.01, 20.0), 'no motion after the reset'
    time.sleep(1.0)
    assert not peer.status.safe_stopped, peer.status.fault_messages


def test_bad_backend_parameter_is_refused_with_its_name() -> None:
    process = start_node(backend='teleport')
    try:
        process.wait(timeout=30)
    finally:
        output = stop_node(process)
    assert process.returncode != 0
    assert "backend must be one of ('mujoco', 'serial', 'ros2_control'), got 'teleport'" in output
