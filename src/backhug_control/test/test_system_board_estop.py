"""The board's own emergency stop, end to end over the real serial path: the board emulator
(backhug_board_emulator, MuJoCo physics behind a pty) -> hw_interface (serial backend) ->
/hardware/status -> safety_monitor latches ESTOP -> fingers retracted; the reset is refused
while the e-stop input is active and accepted after its release.

The three ROS processes and the test peer are those of test_system_faults.py (loaded from that
file), with hw_interface on the serial backend.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for

_spec = importlib.util.spec_from_file_location(
    'backhug_control_system_faults', Path(__file__).with_name('test_system_faults.py')
)
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)


@pytest.fixture(scope='module')
def board(tmp_path_factory):
    """The emulated board on a pty with a control socket."""
    from ament_index_python.packages import get_package_prefix

    directory = tmp_path_factory.mktemp('board')
    link, control = directory / 'board', directory / 'control'
    exe = Path(get_package_prefix('backhug_hw_interface')) / 'lib/backhug_hw_interface'
    command = [str(exe / 'backhug_board_emulator'), '--link', str(link)]
    command += ['--control-socket', str(control)]
    log = open(directory / 'emulator.log', 'w')  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: link.exists() and control.exists(), 30.0), 'no emulator pty'
        yield link, control
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope='module')
def system(board, tmp_path_factory):
    link, _ = board
    # Seven busy processes share this 2-core machine here (emulator, three nodes, the test):
    # heartbeats get a generous timeout so a scheduling gap is not mistaken for a dead node.
    system = faults.System(
        tmp_path_factory.mktemp('board_estop'),
        hw_overrides={'backend': 'serial', 'serial_port': str(link)},
        monitor_overrides={'heartbeat_timeout_s': '1.0'},
    )
    try:
        yield system
    finally:
        system.setpoints[:] = 0.0
        system.stop_all()


@pytest.mark.slow
def test_board_estop_over_the_serial_link(system, board) -> None:
    """Marked slow: needs a machine that is not overloaded (the serial link's 100 ms timeouts
    trip under a load average of ~16 on 2 cores, and the link then flaps)."""
    from backhug_hw_interface.emulator import send_control

    _, control = board
    fingers = faults.press_row_5(system)
    fault_at = time.monotonic()
    send_control(control, 'estop on')
    assert wait_for(lambda: system.safety() == (system.SafetyStatus.ESTOP, True), 5.0), (
        system.status and list(system.status.reasons)
    )
    assert 'emergency stop pressed (board)' in system.status.reasons
    assert system.hardware.estop
    faults._report(system, fingers, fault_at, 'board e-stop over serial')
    time.sleep(0.5)
    assert np.nanmax(system.positions()) < faults.RETRACTED_M
    ok, message = system.reset()
    assert not ok and 'emergency stop pressed' in message, message
    send_control(control, 'estop off')
    assert wait_for(lambda: system.reset()[0], 15.0, 0.5), 'reset refused after the release'
    assert wait_for(lambda: system.safety()[0] == system.SafetyStatus.OK, 5.0)
