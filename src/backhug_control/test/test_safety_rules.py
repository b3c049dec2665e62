"""SafetyRules: every rule with crafted inputs, start-up, latch, and reset semantics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from backhug_control.safety_rules import (
    HardwareSample,
    HeartbeatSample,
    JointSample,
    SafetyInputs,
    SafetyParameters,
    SafetyRules,
    validate_parameters,
)

from backhug_control import safety_rules as sr

NAMES = [f'finger_{side}_{row:02d}_joint' for side in 'lr' for row in range(1, 4)]
WATCHED = ('finger_controllers', 'program_sequencer', 'hw_interface')


class Feed:
    """Drives a SafetyRules with a healthy 200 Hz stream unless told otherwise."""

    def __init__(self, params: SafetyParameters | None = None) -> None:
        self.rules = SafetyRules(params or SafetyParameters(), NAMES)
        self.now = 100.0
        self.stamp = 0.0
        self.position = np.full(len(NAMES), 0.01)
        self.effort = np.full(len(NAMES), 30.0)
        self.rng = np.random.default_rng(0)
        self.hardware = HardwareSample(received_s=self.now)
        self.beating = set(WATCHED)
        self.publishing = True
        self.stamp_frozen = False

    def sample(self) -> JointSample:
        noise = self.rng.normal(0.0, 0.05, len(NAMES))
        return JointSample(
            self.now, self.stamp, NAMES, self.position.copy(), np.zeros(6), self.effort + noise
        )

    def run(self, seconds: float, period_s: float = 0.01) -> sr.Verdict:
        verdict = None
        for _ in range(max(1, round(seconds / period_s))):
            samples = []
            for _ in range(2):  # two joint states per 100 Hz evaluation
                self.now += period_s / 2
                if not self.stamp_frozen:
                    self.stamp += period_s / 2
                if self.publishing:
                    samples.append(self.sample())
            self.hardware = dataclasses.replace(self.hardware, received_s=self.now)
            beats = {name: HeartbeatSample(self.now) for name in self.beating}
            verdict = self.rules.evaluate(
                SafetyInputs(tuple(samples), self.hardware, beats), self.now
            )
        return verdict


@pytest.fixture
def feed() -> Feed:
    feed = Feed()
    assert feed.run(0.1).state == sr.OK
    return feed


def test_start_up_waits_unlatched_for_joint_states_and_every_heartbeat() -> None:
    rules = SafetyRules(SafetyParameters(), NAMES)
    verdict = rules.evaluate(SafetyInputs(), 1.0)
    assert verdict.state == sr.FAULT and not verdict.latched and verdict.waiting
    assert verdict.reasons[0] == 'waiting for /joint_states'
    assert 'waiting for heartbeat of finger_controllers, program_sequencer, hw_interface' in (
        verdict.reasons
    )
    assert not verdict.motion_allowed
    beats = {n: HeartbeatSample(1.1) for n in WATCHED[:2]}
    verdict = rules.evaluate(SafetyInputs(heartbeats=beats), 1.1)
    assert verdict.reasons == ['waiting for /joint_states', 'waiting for heartbeat of hw_interface']
    sample = JointSample(1.2, 0.0, NAMES, [0.0] * 6, [0.0] * 6, [0.1] * 6)
    beats = {n: HeartbeatSample(1.2) for n in WATCHED}
    verdict = rules.evaluate(SafetyInputs((sample,), None, beats), 1.2)
    assert verdict.state == sr.OK and verdict.reasons == [] and not verdict.latched
    ok, message = rules.reset(1.2)
    assert ok and message == 'nothing latched'


def test_a_condition_present_at_start_up_latches_once_everything_is_seen() -> None:
    rules = SafetyRules(SafetyParameters(), NAMES)
    sample = JointSample(1.0, 0.0, NAMES, [0.0] * 6, [0.0] * 6, [190.0] + [0.0] * 5)
    verdict = rules.evaluate(SafetyInputs((sample,)), 1.0)
    assert verdict.state == sr.FAULT and not verdict.latched
    assert any('above 180 N' in r for r in verdict.reasons)
    beats = {n: HeartbeatSample(1.01) for n in WATCHED}
    verdict = rules.evaluate(SafetyInputs(heartbeats=beats), 1.01)
    assert verdict.state == sr.FAULT and verdict.latched and verdict.latched_at_s == 1.01


def test_overload_latches_and_reset_is_refused_until_it_clears(feed: Feed) -> None:
    feed.effort[2] = 185.0
    verdict = feed.run(0.02)
    assert verdict.state == sr.FAULT and verdict.latched
    assert verdict.finger_flags[2] & sr.FLAG_OVERLOAD
    assert 'finger load above 180 N: finger_l_03_joint 185' in verdict.reasons[0]
    ok, message = feed.rules.reset(feed.now)
    assert not ok and 'finger_l_03_joint' in message
    feed.effort[2] = 30.0
    verdict = feed.run(0.1)
    assert verdict.state == sr.FAULT and verdict.latched, 'the latch outlives the condition'
    assert verdict.finger_flags[2] & sr.FLAG_OVERLOAD, 'the cause stays flagged while latched'
    assert 'finger load above 180 N' in verdict.reasons[0], 'the latch keeps its first reason'
    ok, message = feed.rules.reset(feed.now)
    assert ok, message
    verdict = feed.run(0.02)
    assert verdict.state == sr.OK and not verdict.finger_flags.any()


def test_a_spike_between_evaluations_is_caught() -> None:
    feed = Feed(SafetyParameters(rise_rate_limit_n_s=100000.0))
    feed.run(0.1)
    feed.now += 0.005
    feed.stamp += 0.005
    feed.effort[0] = 200.0
    spike = feed.sample()
    feed.effort[0] = 30.0
    feed.now += 0.005
    feed.stamp += 0.005
    calm = feed.sample()
    beats = {n: HeartbeatSample(feed.now) for n in WATCHED}
    verdict = feed.rules.evaluate(SafetyInputs((spike, calm), feed.hardware, beats), feed.now)
    assert verdict.latched and verdict.finger_flags[0] & sr.FLAG_OVERLOAD


def test_load_warning_allows_motion_and_does_not_latch(feed: Feed) -> None:
    for load in np.linspace(30.0, 160.0, 50):  # 260 N/s
        feed.effort[4] = load
        verdict = feed.run(0.01)
    assert verdict.state == sr.WARNING and verdict.motion_allowed and not verdict.latched
    assert verdict.finger_flags[4] == sr.FLAG_LOAD_WARNING
    feed.effort[4] = 30.0
    assert feed.run(0.02).state == sr.OK


def test_total_load_limit_and_warning() -> None:
    feed = Feed(SafetyParameters(total_load_warning_n=500.0, total_load_limit_n=700.0))
    feed.run(0.05)
    feed.effort[:] = 100.0  # 600 N
    verdict = feed.run(0.02)
    assert verdict.state == sr.WARNING and 'total load 600 N' in verdict.reasons[0]
    feed.effort[:] = 125.0  # 750 N
    verdict = feed.run(0.02)
    assert verdict.latched and 'total load 750 N above the limit 700 N' in verdict.reasons[0]


def test_rise_rate_limit() -> None:
    feed = Feed(SafetyParameters(rise_rate_limit_n_s=1000.0))
    feed.run(0.1)
    for _ in range(20):  # 800 N/s: allowed
        feed.effort[1] += 4.0
        verdict = feed.run(0.005, 0.01)
    assert verdict.state == sr.OK
    for _ in range(10):  # 3000 N/s
        feed.effort[1] = min(feed.effort[1] + 15.0, 170.0)
        verdict = feed.run(0.005, 0.01)
        if verdict.latched:
            break
    assert verdict.latched and verdict.finger_flags[1] & sr.FLAG_RISE_RATE
    assert 'load rising faster than 1000 N/s: finger_l_02_joint' in verdict.reasons[0]


def test_position_outside_the_joint_limits(feed: Feed) -> None:
    feed.position[5] = 0.0431
    verdict = feed.run(0.02)
    assert verdict.latched and verdict.finger_flags[5] & sr.FLAG_POSITION
    assert 'finger_r_03_joint 43.1 mm' in verdict.reasons[0]


def test_stale_joint_states_are_judged_on_the_monotonic_clock(feed: Feed) -> None:
    feed.publishing = False
    verdict = feed.run(0.15)
    assert verdict.state == sr.OK, '0.15 s without /joint_states is within the 0.2 s limit'
    verdict = feed.run(0.1)
    assert verdict.latched and (verdict.finger_flags & sr.FLAG_STALE).all()
    assert '/joint_states stale' in verdict.reasons[0]
    ok, _ = feed.rules.reset(feed.now)
    assert not ok
    feed.publishing = True
    feed.run(0.02)
    assert feed.rules.reset(feed.now)[0]


def test_frozen_header_stamp_and_frozen_sensor_values(feed: Feed) -> None:
    # Messages keep coming with the same stamp (simulator stopped, publisher republishing).
    feed.stamp_frozen = True
    assert feed.run(0.15).state == sr.OK
    verdict = feed.run(0.1)
    assert verdict.latched and 'header stamp unchanged' in ' '.join(verdict.reasons)

    other = Feed()
    other.run(0.1)
    frozen_value = other.effort[3]
    original = other.sample

    def frozen_sample() -> JointSample:
        sample = original()
        sample.effort_n[3] = frozen_value
        return sample

    other.sample = frozen_sample
    assert other.run(0.9).state == sr.OK
    verdict = other.run(0.2)
    assert verdict.latched and verdict.finger_flags[3] & sr.FLAG_STALE
    assert 'sensor frozen' in verdict.reasons[0] and 'finger_r_01_joint' in verdict.reasons[0]


def test_unstamped_joint_states_are_judged_on_arrival() -> None:
    feed = Feed()
    original = feed.sample

    def unstamped() -> JointSample:
        return dataclasses.replace(original(), stamp_s=0.0)

    feed.sample = unstamped
    assert feed.run(1.0).state == sr.OK
    feed.publishing = False
    assert '/joint_states stale' in feed.run(0.3).reasons[0]


@pytest.mark.parametrize('where', ['effort', 'position', 'velocity', 'missing'])
def test_nan_or_missing_values_latch_flagged_invalid(feed: Feed, where: str) -> None:
    sample = feed.sample()
    if where == 'effort':
        sample.effort_n[0] = math.nan
    elif where == 'position':
        sample.position_m[0] = math.inf
    elif where == 'velocity':
        sample.velocity_m_s[0] = math.nan
    else:
        sample = JointSample(
            feed.now, feed.stamp + 0.01, NAMES[1:], [0.01] * 5, [0.0] * 5, [30.0] * 5
        )
    beats = {n: HeartbeatSample(feed.now) for n in WATCHED}
    verdict = feed.rules.evaluate(SafetyInputs((sample,), feed.hardware, beats), feed.now)
    assert verdict.latched and verdict.finger_flags[0] == sr.FLAG_INVALID
    assert 'finger_l_01_joint' in verdict.reasons[0]


def test_board_fault_latches_on_its_edge_and_the_reset_acknowledges_it(feed: Feed) -> None:
    stalled = HardwareSample(
        feed.now,
        board_faults=32,
        fault_messages=['finger_l_02_joint stalled'],
        finger_names=NAMES,
        finger_faults=[0, 32, 0, 0, 0, 0],
    )
    feed.hardware = stalled
    verdict = feed.run(0.02)
    assert verdict.state == sr.FAULT and verdict.latched
    assert verdict.finger_flags[1] & sr.FLAG_BOARD_FAULT
    assert 'board fault: finger_l_02_joint stalled' in verdict.reasons
    # The board keeps the bit latched until hw_interface resets it, which needs an OK status:
    # the reset acknowledges the bit instead of deadlocking.
    ok, message = feed.rules.reset(feed.now)
    assert ok and 'board faults 0x20 acknowledged' in message, message
    verdict = feed.run(0.02)
    assert verdict.state == sr.WARNING and not verdict.latched
    assert 'still latched in the board' in verdict.reasons[0]
    feed.hardware = HardwareSample(feed.now)  # hw_interface reset the board
    assert feed.run(0.02).state == sr.OK
    feed.hardware = stalled  # the same fault again: a new edge latches again
    assert feed.run(0.02).latched


def test_a_safe_stop_hw_interface_latched_on_its_own_is_a_fault(feed: Feed) -> None:
    """hw_interface latched a safe stop (its safety status went silent 0.51 s under load): the
    status must not stay OK while nothing can move; the reset acknowledges it (then asks
    /hw_interface/reset) instead of deadlocking."""
    stopped = HardwareSample(
        feed.now,
        safe_stopped=True,
        fault_messages=['safe stop: safety status not heard for 0.51 s (safety monitor gone?)'],
    )
    feed.hardware = stopped
    verdict = feed.run(0.02)
    assert verdict.state == sr.FAULT and verdict.latched
    assert any('hw_interface holds the device in safe stop' in r for r in verdict.reasons)
    assert any('not heard for 0.51 s' in r for r in verdict.reasons)
    ok, message = feed.rules.reset(feed.now)
    assert ok, message
    assert feed.run(0.02).state == sr.OK  # acknowledged while hw_interface resets
    feed.hardware = HardwareSample(feed.now)  # /hw_interface/reset cleared it
    assert feed.run(0.02).state == sr.OK
    feed.hardware = stopped  # a new safe stop: latches again
    assert feed.run(0.02).latched


def test_link_down_blocks_the_reset(feed: Feed) -> None:
    feed.hardware = HardwareSample(feed.now, link=sr.LINK_DISCONNECTED)
    verdict = feed.run(0.02)
    assert verdict.latched and 'hardware link down' in verdict.reasons
    ok, message = feed.rules.reset(feed.now)
    assert not ok and 'hardware link down' in message
    feed.hardware = HardwareSample(feed.now)
    feed.run(0.02)
    assert feed.rules.reset(feed.now)[0]


def test_board_estop_latches_estop_and_blocks_reset_while_pressed(feed: Feed) -> None:
    feed.hardware = HardwareSample(feed.now, estop=True, board_faults=sr.FAULT_ESTOP)
    verdict = feed.run(0.02)
    assert verdict.state == sr.ESTOP and verdict.latched
    assert verdict.reasons[0] == 'emergency stop pressed (board)'
    assert not feed.rules.reset(feed.now)[0]
    # Released, but the board keeps FAULT_ESTOP latched until hw_interface resets it (which
    # needs an OK status): the reset acknowledges the bit.
    feed.hardware = HardwareSample(feed.now, board_faults=sr.FAULT_ESTOP)
    assert feed.run(0.02).state == sr.ESTOP
    ok, message = feed.rules.reset(feed.now)
    assert ok and 'acknowledged' in message, message
    assert feed.run(0.02).state == sr.WARNING
    feed.hardware = HardwareSample(feed.now)
    assert feed.run(0.02).state == sr.OK


def test_board_latched_estop_bit_alone_latches_estop(feed: Feed) -> None:
    feed.hardware = HardwareSample(feed.now, board_faults=sr.FAULT_ESTOP)
    verdict = feed.run(0.02)
    assert verdict.state == sr.ESTOP and verdict.latched
    assert verdict.reasons[0] == 'emergency stop latched by the board'


def test_software_estop_escalates_a_fault_and_resets_when_clear(feed: Feed) -> None:
    feed.effort[0] = 181.0
    assert feed.run(0.02).state == sr.FAULT
    feed.rules.emergency_stop('operator pressed stop', feed.now)
    verdict = feed.run(0.02)
    assert verdict.state == sr.ESTOP
    assert verdict.reasons[0] == 'emergency stop: operator pressed stop'
    assert not feed.rules.reset(feed.now)[0], 'the overload is still there'
    feed.effort[0] = 30.0
    feed.run(0.02)
    assert feed.rules.reset(feed.now)[0]


def test_missing_heartbeat_latches_and_degraded_warns(feed: Feed) -> None:
    feed.beating.discard('program_sequencer')
    assert feed.run(0.25).state == sr.OK
    verdict = feed.run(0.1)
    assert verdict.latched
    assert verdict.reasons[0].startswith('heartbeat of program_sequencer missing for 0.3')
    feed.beating.add('program_sequencer')
    feed.run(0.02)
    assert feed.rules.reset(feed.now)[0]
    beats = {n: HeartbeatSample(feed.now, sr.HEARTBEAT_STATE_DEGRADED, 'slow') for n in WATCHED}
    verdict = feed.rules.evaluate(SafetyInputs(heartbeats=beats), feed.now)
    assert verdict.state == sr.WARNING and 'finger_controllers degraded: slow' in verdict.reasons


def test_hardware_status_silence() -> None:
    feed = Feed()
    feed.run(0.1)
    feed.hardware = HardwareSample(feed.now)
    for _ in range(120):
        feed.now += 0.01
        feed.stamp += 0.01
        beats = {n: HeartbeatSample(feed.now) for n in WATCHED}
        verdict = feed.rules.evaluate(SafetyInputs((feed.sample(),), None, beats), feed.now)
    assert verdict.latched and '/hardware/status not heard' in verdict.reasons[0]


def test_parameters_are_validated_naming_the_field() -> None:
    with pytest.raises(ValueError, match='load_limit_n'):
        validate_parameters(SafetyParameters(load_limit_n=200.0))
    with pytest.raises(ValueError, match='heartbeat_timeout_s'):
        validate_parameters(SafetyParameters(heartbeat_timeout_s=math.nan))
    with pytest.raises(ValueError, match='load_warning_n'):
        validate_parameters(SafetyParameters(load_warning_n=170.0, load_limit_n=160.0))
    with pytest.raises(ValueError, match='watched_nodes'):
        validate_parameters(SafetyParameters(watched_nodes=('',)))
