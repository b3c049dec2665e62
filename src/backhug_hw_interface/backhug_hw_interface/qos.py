"""The QoS profiles of the BackHug graph, in one place (see docs/architecture.md).

hw_interface is the lowest package every node depends on, so the profiles live here and every
node imports them instead of spelling out depths and durabilities again.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: Streams: /joint_states, finger_commands, finger_setpoints, /hardware/status, /diagnostics.
STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Latched state: /safety/status, /robot_description. A late joiner gets the last message.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

#: /heartbeat: every node publishes at 20 Hz on one topic, so keep a deeper queue.
HEARTBEAT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=50,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Topic names, so a typo is an import error rather than a silent disconnect.
JOINT_STATES = '/joint_states'
FINGER_COMMANDS = '/finger_commands'
FINGER_SETPOINTS = '/finger_setpoints'
SAFETY_STATUS = '/safety/status'
HARDWARE_STATUS = '/hardware/status'
HEARTBEAT = '/heartbeat'
DIAGNOSTICS = '/diagnostics'
CLOCK = '/clock'
ROBOT_DESCRIPTION = '/robot_description'
SAFE_STOP_SERVICE = '/hw_interface/safe_stop'
HW_RESET_SERVICE = '/hw_interface/reset'
SAFETY_RESET_SERVICE = '/safety_monitor/reset'
EMERGENCY_STOP_SERVICE = '/safety_monitor/emergency_stop'
