"""The ``scan_spine`` action server: runs a SpineScan against the live device.

Hosted by program_sequencer (one motion owner: a scan and a program never run at once). The host
gives it a way to publish force setpoints and a lock that marks who owns the fingers; the scan
feeds each ``/joint_states`` sample to the state machine and publishes the setpoints it returns.
A latched safety fault, a cancel or a stale joint stream aborts the scan: setpoints go to zero
(the controllers retract) and the result carries the partial map marked incomplete.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState

from backhug_interfaces.action import ScanSpine
from backhug_interfaces.msg import FingerScan, SafetyStatus, SegmentStiffness, SpineMap, UserProfile
from backhug_programs.spinemap.model import SpineMapResult
from backhug_programs.spinemap.scan import FingerGeometry, ScanSettings, SpineScan

LevelsForUser = Callable[[UserProfile], list[tuple[str, float]]]


def to_message(result: SpineMapResult) -> SpineMap:
    """The SpineMap message of a scan result."""
    msg = SpineMap(
        user_id=result.user_id,
        complete=result.complete,
        reason=result.reason,
        band_min_force_n=float(result.band_min_force_n),
        band_max_force_n=float(result.band_max_force_n),
    )
    msg.fingers = [
        FingerScan(
            name=f.name,
            side=f.side,
            row=f.row,
            contact_height_m=f.contact_height_m,
            stiffness_n_per_mm=f.stiffness_n_per_mm,
            stiffness_uncertainty_n_per_mm=f.uncertainty_n_per_mm,
            cycles=f.cycles,
            valid=f.valid,
        )
        for f in result.fingers
    ]
    msg.segments = [
        SegmentStiffness(
            level=s.level,
            position_m=s.position_m,
            stiffness_left_n_per_mm=s.stiffness_left_n_per_mm,
            stiffness_right_n_per_mm=s.stiffness_right_n_per_mm,
            uncertainty_left_n_per_mm=s.uncertainty_left_n_per_mm,
            uncertainty_right_n_per_mm=s.uncertainty_right_n_per_mm,
        )
        for s in result.segments
    ]
    return msg


class ScanSpineServer:
    """Serves ``/scan_spine``; while ``active`` the host must leave the setpoints alone."""

    def __init__(
        self,
        node: Node,
        *,
        fingers: list[FingerGeometry],
        publish_setpoints: Callable[[list[str], np.ndarray], None],
        motion_lock: threading.Lock,
        levels_for_user: LevelsForUser,
        stale_joint_states_s: float = 0.5,
    ) -> None:
        self._node = node
        self._fingers = fingers
        self._names = [f.name for f in fingers]
        self._publish = publish_setpoints
        self._motion_lock = motion_lock
        self._levels_for_user = levels_for_user
        self._stale_s = stale_joint_states_s
        self._scan: SpineScan | None = None
        self._scan_lock = threading.Lock()
        self._safety_reason = ''
        self._last_sample_wall = 0.0
        self._group = ReentrantCallbackGroup()
        self._index: list[int] | None = None
        # /joint_states only while a scan runs: at 200 Hz (x sim speed) an idle subscription is
        # a large share of the sequencer's CPU in Python.
        self._subscription = None
        self._server = ActionServer(
            node,
            ScanSpine,
            'scan_spine',
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=self._group,
        )

    @property
    def active(self) -> bool:
        """True while a scan owns the fingers."""
        return self._scan is not None

    def on_safety_status(self, status: SafetyStatus) -> None:
        """Abort a running scan when the safety status latches (the host forwards it)."""
        if status.state in (SafetyStatus.FAULT, SafetyStatus.ESTOP):
            reasons = '; '.join(status.reasons) or 'safety fault'
            self._safety_reason = f'safety: {reasons}'
            with self._scan_lock:
                if self._scan is not None and not self._scan.done:
                    self._scan.abort(self._safety_reason)

    def destroy(self) -> None:
        """Release the action server."""
        self._server.destroy()

    # -- action callbacks ------------------------------------------------------------------------
    def _on_goal(self, goal: ScanSpine.Goal) -> GoalResponse:
        settings = self._settings(goal)
        try:
            settings.validate()
        except ValueError as error:
            self._node.get_logger().warning(f'scan_spine goal rejected: {error}')
            return GoalResponse.REJECT
        if self._motion_lock.locked():
            self._node.get_logger().warning('scan_spine goal rejected: the fingers are busy')
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    @staticmethod
    def _settings(goal: ScanSpine.Goal) -> ScanSettings:
        settings = ScanSettings()
        if goal.band_min_force_n > 0.0:
            settings.band_min_force_n = goal.band_min_force_n
        if goal.band_max_force_n > 0.0:
            settings.band_max_force_n = goal.band_max_force_n
        if goal.cycles > 0:
            settings.cycles = goal.cycles
        if not goal.measure_stiffness:
            settings.cycles = 1  # one gentle cycle still fixes the contact surface estimate
        return settings

    def _execute(self, goal_handle) -> ScanSpine.Result:
        goal: ScanSpine.Goal = goal_handle.request
        result = ScanSpine.Result()
        if not self._motion_lock.acquire(blocking=False):
            goal_handle.abort()
            result.outcome, result.reason = ScanSpine.Result.REJECTED, 'the fingers are busy'
            return result
        try:
            levels = self._levels_for_user(goal.user)
            stamp = datetime.now(UTC).isoformat(timespec='seconds')
            scan = SpineScan(self._fingers, self._settings(goal), levels, goal.user.user_id, stamp)
            self._safety_reason = ''
            self._last_sample_wall = time.monotonic()
            with self._scan_lock:
                self._scan = scan
            self._subscription = self._node.create_subscription(
                JointState, '/joint_states', self._on_joint_state, 10, callback_group=self._group
            )
            self._node.get_logger().info(f'spine scan started for user {goal.user.user_id!r}')
            feedback = ScanSpine.Feedback()
            while not scan.done:
                if goal_handle.is_cancel_requested:
                    with self._scan_lock:
                        scan.abort('cancelled')
                    break
                if time.monotonic() - self._last_sample_wall > max(self._stale_s, 2.0):
                    with self._scan_lock:
                        scan.abort('joint states stopped arriving')
                    break
                feedback.stage = scan.stage.value
                active = scan.active_fingers
                feedback.finger = ', '.join(active)
                feedback.progress = scan.progress
                goal_handle.publish_feedback(feedback)
                time.sleep(0.1)
            self._publish(self._names, np.zeros(len(self._names)))
            spine_map = scan.result()
            result.map = to_message(spine_map)
            result.map.header.stamp = self._node.get_clock().now().to_msg()
            if spine_map.complete:
                result.outcome = ScanSpine.Result.COMPLETED
                goal_handle.succeed()
            elif goal_handle.is_cancel_requested:
                result.outcome, result.reason = ScanSpine.Result.CANCELLED, spine_map.reason
                goal_handle.canceled()
            else:
                result.outcome, result.reason = ScanSpine.Result.ABORTED, spine_map.reason
                goal_handle.abort()
            peak = scan.max_load_n
            self._node.get_logger().info(
                f'spine scan ended: {spine_map.reason or "complete"}; peak load {peak:.1f} N'
            )
            return result
        finally:
            with self._scan_lock:
                self._scan = None
            if self._subscription is not None:
                self._node.destroy_subscription(self._subscription)
                self._subscription = None
            self._motion_lock.release()

    def _on_joint_state(self, msg: JointState) -> None:
        scan = self._scan
        if scan is None:
            return
        if self._index is None or len(msg.name) != len(self._index or []):
            lookup = {name: i for i, name in enumerate(msg.name)}
            missing = [n for n in self._names if n not in lookup]
            if missing:
                with self._scan_lock:
                    scan.abort(f'joint states lack {", ".join(missing[:3])}')
                return
            self._index = [lookup[n] for n in self._names]
        if len(msg.position) < len(msg.name) or len(msg.effort) < len(msg.name):
            return
        position = np.asarray(msg.position)[self._index]
        load = np.asarray(msg.effort)[self._index]
        t_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self._last_sample_wall = time.monotonic()
        with self._scan_lock:
            if self._scan is None:
                return
            setpoints = scan.update(t_s, position, load)
        if not math.isnan(float(np.sum(setpoints))):
            self._publish(self._names, setpoints)
