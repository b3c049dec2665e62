"""The board emulator in a process of its own (not starved by the measuring process's GIL),
with a line protocol on stdin/stdout for what the fault campaign reads:

    started: prints ``port <pty path> <niceness>`` (raised to -10 when allowed: see main)
    ``log PATH SINCE``  writes command_log and fault_log entries at or after SINCE (monotonic s,
                        the same clock in every process) to PATH (JSON), prints ``ok``
    ``pos``             prints the true finger positions (JSON list, m; a frozen sensor's too)
Faults go through the control socket (``send_control``). Ends on EOF or SIGTERM.

    python bench/emulator_proc.py CONTROL_SOCKET
"""

from __future__ import annotations

import json
import os
import sys

from backhug_hw_interface.emulator import BoardEmulator


def main() -> int:
    # The emulator stands in for the board's microcontroller, which shares no CPU with the host:
    # raise its priority (before its threads start: they inherit it) so the host's load does not
    # starve it into a watchdog or link timeout no real board would have. Needs root; else 0.
    try:
        niceness = os.nice(-10)
    except OSError:
        niceness = os.nice(0)
    board = BoardEmulator(control_socket=sys.argv[1])
    print('port', board.start(), niceness, flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == 'log':
                since = float(words[2])
                data = {
                    'commands': [
                        [t, [float(x) for x in targets], [bool(e) for e in enable]]
                        for t, targets, enable in list(board.command_log)
                        if t >= since
                    ],
                    'faults': [
                        [t, int(r.fault_bits), r.finger]
                        for t, r in list(board.fault_log)
                        if t >= since
                    ],
                }
                with open(words[1], 'w') as handle:
                    json.dump(data, handle)
                print('ok', flush=True)
            elif words[0] == 'pos':
                print(
                    json.dumps([float(x) for x in board.simulation.true_position_m()]), flush=True
                )
    finally:
        board.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
