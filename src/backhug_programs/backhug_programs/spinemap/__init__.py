"""Spine map: back profile and per-segment stiffness from a finger scan, its report and history.

Pure modules (no rclpy): ``analysis`` turns recorded load/position samples into stiffness with an
uncertainty, ``scan`` is the scan procedure as a state machine, ``report`` writes spinemap.json and
spinemap.png, ``history`` keeps scans in SQLite. The action server lives in ``scan_server``.
"""
