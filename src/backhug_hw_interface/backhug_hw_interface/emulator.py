"""Board emulator: the motor board's firmware behaviour on a pseudo-terminal, over MuJoCo physics.

``BoardEmulator`` opens a pty (raw mode) and runs a thread that steps a ``DeviceSimulation`` in
wall-clock real time (x ``speed``) and speaks docs/board_protocol.md like the firmware does:
handshake, position servo targets, STATE after every COMMAND and at least every 10 ms, its own
command watchdog, over-load / over-travel / stall trips, the emergency-stop input and RESET. Any
latched fault holds every finger retracted until RESET (the firmware's layer of the safety
chain). Faults can be injected at run time (link drops and corruption, frozen sensors, stalled
motors, load spikes, unplugging) from Python or, for a separate process, through a Unix datagram
control socket (``send_control``), whose ``stats`` command also reports what the board received
(every COMMAND's targets: count, per-finger min/max, how many were outside the joint limits)
and its simulated time, for tests that run the emulator as a process.

The pty path changes when ``disconnect()`` reopens a new pty; pass ``link_path=`` for a stable
symlink (updated atomically on every reopen) that a host can reopen by name, like a udev name.

The executable ``backhug_board_emulator`` prints the device path (the link if given) on stdout
and runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import signal
import socket
import sys
import tempfile
import termios
import threading
import time
import tty
from collections import deque
from pathlib import Path

import numpy as np

from backhug_hw_interface import protocol as p

FIRMWARE_ID = 'backhug-emulator'
FIRMWARE_VERSION = 0x0001_0000  # 1.0.0 (major << 16 | minor << 8 | patch)
# Faults that hold every finger retracted until RESET (SUPPLY and LINK are not the board's).
_INHIBITING = (
    p.FAULT_WATCHDOG
    | p.FAULT_OVERLOAD
    | p.FAULT_OVERTRAVEL
    | p.FAULT_ESTOP
    | p.FAULT_SENSOR
    | p.FAULT_STALL
)
_CONTROL_HELP = (
    'commands: estop on|off, push NAME FORCE_N DURATION_S, freeze NAME, stall NAME, '
    'corrupt FRACTION, drop FRACTION, disconnect SECONDS, clear, status, stats'
)


class BoardEmulator:
    """The motor board on a pty, backed by the MuJoCo device simulation."""

    def __init__(
        self,
        description=None,
        user='default',
        seed: int = 0,
        *,
        watchdog_s: float = 0.1,
        overload_n: float = 180.0,
        speed: float = 1.0,
        drop_fraction: float = 0.0,
        corrupt_fraction: float = 0.0,
        link_path: str | os.PathLike | None = None,
        control_socket: str | os.PathLike | None = None,
        state_period_s: float = 0.01,
        overtravel_margin_m: float = 0.002,
        stall_error_m: float = 0.005,
        stall_time_s: float = 0.25,
    ) -> None:
        for name, value, low, high in (
            ('watchdog_s', watchdog_s, 0.005, 10.0),
            ('overload_n', overload_n, 1.0, 5000.0),
            ('speed', speed, 0.01, 100.0),
            ('state_period_s', state_period_s, 0.001, 1.0),
            ('overtravel_margin_m', overtravel_margin_m, 0.0, 0.05),
            ('stall_error_m', stall_error_m, 0.0005, 0.1),
            ('stall_time_s', stall_time_s, 0.01, 10.0),
        ):
            _check_number(name, value, low, high)
        if description is None:
            from backhug_description import load_description

            description = load_description('sim')
        from backhug_hw_interface.sim import DeviceSimulation

        self.description = description
        self.simulation = DeviceSimulation(description, user, seed=seed)
        self.finger_count = self.simulation.joint_count
        if self.finger_count > p.MAX_FINGERS:
            raise ValueError(f'{self.finger_count} fingers: the protocol carries {p.MAX_FINGERS}')
        self.joint_names = list(self.simulation.joint_names)
        self._lower = np.array([j.lower_m for j in description.joints])
        self._upper = np.array([j.upper_m for j in description.joints])
        self.watchdog_s = float(watchdog_s)
        self.overload_n = float(overload_n)
        self.speed = float(speed)
        self.state_period_s = float(state_period_s)
        self.overtravel_margin_m = float(overtravel_margin_m)
        self.stall_error_m = float(stall_error_m)
        self.stall_time_s = float(stall_time_s)
        self.drop_fraction = drop_fraction
        self.corrupt_fraction = corrupt_fraction
        self.link_path = Path(link_path) if link_path is not None else None
        self.control_socket_path = Path(control_socket) if control_socket is not None else None
        self.port: str | None = None
        #: (time.monotonic(), targets m, enable) of every COMMAND received, accepted or not.
        self.command_log: deque[tuple[float, np.ndarray, np.ndarray]] = deque(maxlen=200_000)
        #: (time.monotonic(), FaultReport) of every fault latched.
        self.fault_log: deque[tuple[float, p.FaultReport]] = deque(maxlen=1000)
        self.frames_rx = 0
        self.frames_tx = 0
        self.frames_dropped = 0
        self.tx_overflows = 0
        self.nacks = 0
        #: Every COMMAND decoded (accepted or refused) since start, whatever command_log kept:
        #: how many, per-finger lowest/highest target, how many had a target outside the joint
        #: limits, and the last one's targets and enables (board order).
        self.commands_received = 0
        self.commands_outside_limits = 0
        self.target_min_m = np.full(self.finger_count, np.inf)
        self.target_max_m = np.full(self.finger_count, -np.inf)
        self.last_targets_m = np.zeros(self.finger_count)
        self.last_enable = np.zeros(self.finger_count, dtype=bool)
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._decoder = p.FrameDecoder()
        self._master: int | None = None
        self._slave: int | None = None
        self._control: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reopen_at: float | None = None
        self._firmware_error: str | None = None
        self._session = False
        self._tx_seq = 0
        self._ack_seq = 0
        self._armed = False
        self._last_command = 0.0
        self._last_step = 0.0
        self._next_state = 0.0
        self._state_due = False
        self._estop = False
        self.board_faults = 0
        self.finger_faults = np.zeros(self.finger_count, dtype=np.uint8)
        self._stall_since = np.full(self.finger_count, np.nan)
        self._targets = np.zeros(self.finger_count)
        self._enable = np.zeros(self.finger_count, dtype=bool)

    # -- fault-injection knobs -----------------------------------------------------------------

    @property
    def drop_fraction(self) -> float:
        """Fraction of frames (each direction) silently lost on the link."""
        return self._drop_fraction

    @drop_fraction.setter
    def drop_fraction(self, value: float) -> None:
        self._drop_fraction = _check_number('drop_fraction', value, 0.0, 1.0)

    @property
    def corrupt_fraction(self) -> float:
        """Fraction of frames (each direction) with one byte corrupted on the link."""
        return self._corrupt_fraction

    @corrupt_fraction.setter
    def corrupt_fraction(self, value: float) -> None:
        self._corrupt_fraction = _check_number('corrupt_fraction', value, 0.0, 1.0)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty (and control socket), start the board thread; returns the port path."""
        if self._thread is not None:
            raise RuntimeError('board emulator already started')
        self._open_pty()
        if self.control_socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.control_socket_path.unlink()
            control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            control.bind(str(self.control_socket_path))
            control.setblocking(False)
            self._control = control
        now = time.monotonic()
        self._last_step = self._next_state = now
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name='board_emulator', daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop the thread, close the pty, remove the link and control socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            self._close_pty()
            if self._control is not None:
                self._control.close()
                self._control = None
                with contextlib.suppress(FileNotFoundError):
                    self.control_socket_path.unlink()

    def __enter__(self) -> BoardEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults and inputs ---------------------------------------------------------------------

    def press_estop(self) -> None:
        """Emergency-stop input pressed: retract everything, latch ESTOP, report it."""
        with self._lock:
            if self._estop:
                return
            self._estop = True
            self._send(p.encode_estop(self._next_seq(), board_time_s=self._time(), pressed=True))
            self._latch(p.FAULT_ESTOP, None, 0.0, 'emergency stop pressed')

    def release_estop(self) -> None:
        """Emergency-stop input released; ESTOP stays latched until RESET."""
        with self._lock:
            if not self._estop:
                return
            self._estop = False
            self._send(p.encode_estop(self._next_seq(), board_time_s=self._time(), pressed=False))

    @property
    def estop_pressed(self) -> bool:
        return self._estop

    def freeze_sensor(self, finger: int | str) -> None:
        """The finger's sensors stay at their current value (the board does not notice)."""
        with self._lock:
            self.simulation.freeze_sensor(finger)

    def stall_finger(self, finger: int | str) -> None:
        """The finger's motor jams; the board trips STALL once it stops following."""
        with self._lock:
            self.simulation.stall_finger(finger)

    def push(self, finger: int | str, force_n: float, duration_s: float) -> None:
        """A load spike on one finger (the user pressing down), see DeviceSimulation.push."""
        with self._lock:
            self.simulation.push(finger, force_n, duration_s)

    def clear(self, finger: int | str | None = None) -> None:
        """Remove injected physical faults (not the latched board faults: those need RESET)."""
        with self._lock:
            self.simulation.clear(finger)
            self.drop_fraction = 0.0
            self.corrupt_fraction = 0.0

    def disconnect(self, duration_s: float) -> None:
        """Unplug: close the pty now and open a new one ``duration_s`` later (new path)."""
        _check_number('duration_s', duration_s, 0.0, 3600.0)
        with self._lock:
            self._close_pty()
            self._reopen_at = time.monotonic() + float(duration_s)

    @property
    def connected(self) -> bool:
        return self._master is not None

    @property
    def board_time_s(self) -> float:
        return self._time()

    # -- the board thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = min(self.state_period_s, max(0.0, self._next_state - now))
            sources = [s for s in (self._master, self._control) if s is not None]
            try:
                readable = select.select(sources, [], [], timeout)[0] if sources else []
            except (OSError, ValueError):  # a descriptor closed under us (disconnect)
                readable = []
            if not sources:
                time.sleep(timeout or 0.002)
            with self._lock:
                try:
                    self._cycle(readable)
                except Exception as exc:  # the board keeps running, retracted
                    message = f'firmware error: {type(exc).__name__}: {exc}'
                    if message != self._firmware_error:  # report each distinct error once
                        self._firmware_error = message
                        print(f'board emulator: {message}', file=sys.stderr)
                        self._latch(p.FAULT_SENSOR, None, 0.0, message)

    def _cycle(self, readable: list) -> None:
        now = time.monotonic()
        if self._master is None and self._reopen_at is not None and now >= self._reopen_at:
            self._reopen_at = None
            self._open_pty()
        if self._control is not None and self._control in readable:
            self._serve_control()
        # Physics first, up to now, with the targets in force until now.
        dt = min(now - self._last_step, 0.1) * self.speed
        self._last_step = now
        if dt > 0:
            self.simulation.step(dt)
        if self._master is not None and self._master in readable:
            self._receive()
        self._supervise(time.monotonic())
        if self._state_due or now >= self._next_state:
            if self._session:
                self._send_state()
            self._state_due = False
            self._next_state = now + self.state_period_s

    def _receive(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no host has the slave open: nothing to read
        if data and self._rng.random() < self.corrupt_fraction:
            data = _corrupt(data, self._rng)
        for frame in self._decoder.feed(data):
            if self._rng.random() < self.drop_fraction:
                self.frames_dropped += 1
                continue
            self.frames_rx += 1
            self._handle(frame)
        while self._decoder.rejected:
            rejected = self._decoder.rejected.popleft()
            self._nack(rejected.frame_type, rejected.seq, rejected.code, rejected.reason)

    def _handle(self, frame) -> None:
        if isinstance(frame, p.Hello):
            self._hello(frame)
        elif isinstance(frame, p.Command):
            self._command(frame)
        elif isinstance(frame, p.Reset):
            self._reset(frame)
        elif isinstance(frame, p.Heartbeat):
            self._send(p.encode_heartbeat(self._next_seq(), self._time()))
        else:
            self._nack(
                _frame_type(frame),
                frame.seq,
                p.NACK_UNKNOWN_TYPE,
                f'{type(frame).__name__} is a board-to-host frame',
            )

    def _hello(self, frame: p.Hello) -> None:
        # A new session starts retracted: no targets are inherited from a previous host.
        self._tx_seq = 0
        self._session = frame.version == p.PROTOCOL_VERSION
        self._targets = np.zeros(self.finger_count)
        self._enable = np.zeros(self.finger_count, dtype=bool)
        self._apply_targets()
        self._armed = False
        self._send(
            p.encode_hello_ack(
                self._next_seq(),
                version=p.PROTOCOL_VERSION,
                finger_count=self.finger_count,
                firmware_version=FIRMWARE_VERSION,
                firmware_id=FIRMWARE_ID,
                travel_m=float(np.min(self._upper)),
                overload_trip_n=self.overload_n,
            )
        )
        if not self._session:
            self._nack(
                p.HELLO,
                frame.seq,
                p.NACK_VERSION,
                f'protocol version {frame.version} not supported, board speaks '
                f'{p.PROTOCOL_VERSION}',
            )

    def _command(self, frame: p.Command) -> None:
        targets = np.array(frame.position_m)
        enable = np.array(frame.enable, dtype=bool)
        self.command_log.append((time.monotonic(), targets, enable))
        self._record_command(targets, enable)
        if not self._session:
            self._nack(p.COMMAND, frame.seq, p.NACK_NO_HANDSHAKE, 'COMMAND before HELLO')
            return
        if targets.size != self.finger_count:
            self._nack(
                p.COMMAND,
                frame.seq,
                p.NACK_FINGER_COUNT,
                f'COMMAND has {targets.size} fingers, the board has {self.finger_count}',
            )
            return
        outside = np.flatnonzero((targets < self._lower) | (targets > self._upper))
        if outside.size:
            index = int(outside[0])
            self._nack(
                p.COMMAND,
                frame.seq,
                p.NACK_OUT_OF_RANGE,
                f'position_m[{index}] = {targets[index]} outside '
                f'[{self._lower[index]}, {self._upper[index]}] m',
            )
            return
        self._last_command = time.monotonic()
        self._armed = True
        self._ack_seq = frame.seq
        self._targets, self._enable = targets, enable
        self._apply_targets()
        self._state_due = True

    def _record_command(self, targets: np.ndarray, enable: np.ndarray) -> None:
        self.commands_received += 1
        if targets.size != self.finger_count:
            self.commands_outside_limits += 1  # cannot be judged per finger: counted as outside
            return
        if np.any(~np.isfinite(targets) | (targets < self._lower) | (targets > self._upper)):
            self.commands_outside_limits += 1
        self.target_min_m = np.minimum(self.target_min_m, targets)
        self.target_max_m = np.maximum(self.target_max_m, targets)
        self.last_targets_m, self.last_enable = targets, enable

    def stats(self) -> dict:
        """What the board received and where it is (JSON-able; board order, SI units)."""

        def listed(values) -> list:
            return [round(float(v), 7) if np.isfinite(v) else None for v in values]

        with self._lock:
            return {
                'board_time_s': round(self._time(), 6),
                'connected': self.connected,
                'board_faults': int(self.board_faults),
                'fault_names': p.fault_names(self.board_faults),
                'faults_latched': len(self.fault_log),
                'commands_received': self.commands_received,
                'commands_outside_limits': self.commands_outside_limits,
                'target_min_m': listed(self.target_min_m),
                'target_max_m': listed(self.target_max_m),
                'last_targets_m': listed(self.last_targets_m),
                'last_enable': [bool(e) for e in self.last_enable],
                'position_m': listed(self.simulation.position_m),
                'load_n': listed(self.simulation.load_n),
                'body_weight_n': round(float(self.simulation.body_weight_n), 4),
                'frames_rx': self.frames_rx,
                'frames_tx': self.frames_tx,
                'frames_dropped': self.frames_dropped,
                'crc_errors': self._decoder.crc_errors + self._decoder.length_errors,
                'tx_overflows': self.tx_overflows,
                'nacks': self.nacks,
            }

    def _reset(self, frame: p.Reset) -> None:
        keep = ~frame.clear_mask & 0xFFFFFFFF
        if self._estop:
            keep |= p.FAULT_ESTOP
        overloaded = self.simulation.load_n > self.overload_n
        if overloaded.any():
            keep |= p.FAULT_OVERLOAD
        self.board_faults &= keep
        self.finger_faults &= np.uint8(keep & 0xFF)
        self._stall_since[:] = np.nan
        self._armed = False
        self._targets = np.zeros(self.finger_count)
        self._enable = np.zeros(self.finger_count, dtype=bool)
        self._apply_targets()
        self._send(p.encode_reset_ack(self._next_seq(), self.board_faults))
        self._state_due = True

    def _supervise(self, now: float) -> None:
        """The firmware's checks: watchdog, over-load, over-travel, stall."""
        if self._armed and now - self._last_command > self.watchdog_s:
            self._armed = False
            silence = now - self._last_command
            self._latch(
                p.FAULT_WATCHDOG,
                None,
                silence,
                f'no valid COMMAND for {silence * 1000:.0f} ms (watchdog '
                f'{self.watchdog_s * 1000:.0f} ms): all fingers retracted',
            )
        sim = self.simulation
        load, position, velocity = sim.load_n, sim.position_m, sim.velocity_m_s
        for finger in np.flatnonzero(load > self.overload_n):
            if not self.finger_faults[finger] & p.FAULT_OVERLOAD:
                self._latch(
                    p.FAULT_OVERLOAD,
                    int(finger),
                    float(load[finger]),
                    f'{self.joint_names[finger]} load {load[finger]:.1f} N above the '
                    f'{self.overload_n:.1f} N trip: all fingers retracted',
                )
        margin = self.overtravel_margin_m
        over = (position > self._upper + margin) | (position < self._lower - margin)
        for finger in np.flatnonzero(over):
            if not self.finger_faults[finger] & p.FAULT_OVERTRAVEL:
                self._latch(
                    p.FAULT_OVERTRAVEL,
                    int(finger),
                    float(position[finger]),
                    f'{self.joint_names[finger]} at {position[finger] * 1000:.2f} mm, outside '
                    f'[{self._lower[finger] * 1000:.1f}, {self._upper[finger] * 1000:.1f}] mm',
                )
        goal = np.where(self._effective_enable(), self._targets, self._lower)
        error = np.abs(goal - position)
        stuck = (error > self.stall_error_m) & (np.abs(velocity) < 0.002)
        self._stall_since[~stuck] = np.nan
        starting = stuck & np.isnan(self._stall_since)
        self._stall_since[starting] = now
        for finger in np.flatnonzero(stuck & (now - self._stall_since > self.stall_time_s)):
            if not self.finger_faults[finger] & p.FAULT_STALL:
                self._latch(
                    p.FAULT_STALL,
                    int(finger),
                    float(error[finger]),
                    f'{self.joint_names[finger]} stalled {error[finger] * 1000:.1f} mm from its '
                    f'target for {self.stall_time_s * 1000:.0f} ms: all fingers retracted',
                )

    def _latch(self, bit: int, finger: int | None, value: float, message: str) -> None:
        self.board_faults |= bit
        if finger is not None:
            self.finger_faults[finger] |= bit
        self._apply_targets()  # inhibited now: every finger retracts
        report = p.FaultReport(
            self._next_seq(), self._time(), bit, self.board_faults, finger, value, message[:120]
        )
        self.fault_log.append((time.monotonic(), report))
        self._send(p.encode(report))
        self._state_due = True

    def _effective_enable(self) -> np.ndarray:
        if self.board_faults & _INHIBITING:
            return np.zeros(self.finger_count, dtype=bool)
        return self._enable

    def _apply_targets(self) -> None:
        enable = self._effective_enable()
        targets = np.where(enable, self._targets, self._lower)
        self.simulation.set_targets(targets, enable)

    def _send_state(self) -> None:
        sim = self.simulation
        flags = (p.STATE_FLAG_ESTOP if self._estop else 0) | (
            p.STATE_FLAG_ARMED if self._armed else 0
        )
        if self.board_faults & _INHIBITING:
            flags |= p.STATE_FLAG_INHIBITED
        self._send(
            p.encode_state(
                self._next_seq(),
                board_time_s=self._time(),
                ack_seq=self._ack_seq,
                flags=flags,
                board_faults=self.board_faults,
                position_m=sim.position_m.tolist(),
                velocity_m_s=sim.velocity_m_s.tolist(),
                load_n=sim.load_n.tolist(),
                finger_faults=self.finger_faults.tolist(),
            )
        )

    def _nack(self, frame_type: int, seq: int, reason: int, message: str) -> None:
        self.nacks += 1
        self._send(
            p.encode_nack(
                self._next_seq(),
                rejected_type=frame_type,
                rejected_seq=seq,
                reason=reason,
                message=message.encode()[:120].decode(errors='ignore'),
            )
        )

    def _send(self, frame: bytes) -> None:
        if self._master is None:
            return
        if self._rng.random() < self.drop_fraction:
            self.frames_dropped += 1
            return
        if self._rng.random() < self.corrupt_fraction:
            frame = _corrupt(frame, self._rng)
        try:
            written = os.write(self._master, frame)
        except OSError:  # BlockingIOError included: the output buffer is full
            written = 0
        if written == len(frame):
            self.frames_tx += 1
        else:  # nobody reads the port fast enough: the (rest of the) frame is lost, like a UART
            self.tx_overflows += 1

    def _next_seq(self) -> int:
        seq = self._tx_seq
        self._tx_seq = (self._tx_seq + 1) & 0xFF
        return seq

    def _time(self) -> float:
        return self.simulation.time_s

    # -- pty -----------------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._decoder.reset()
        self._session = False
        path = os.ttyname(slave)
        if self.link_path is not None:
            temporary = self.link_path.with_name(f'.{self.link_path.name}.{os.getpid()}')
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(path)
            temporary.replace(self.link_path)  # atomic: the name never dangles mid-update
            self.port = str(self.link_path)
        else:
            self.port = path

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._session = False
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    # -- control socket ------------------------------------------------------------------------

    def _serve_control(self) -> None:
        while True:
            try:
                data, sender = self._control.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            try:
                reply = 'ok ' + self.control(data.decode('utf-8', errors='replace'))
            except (ValueError, RuntimeError) as exc:
                reply = f'error: {exc}'
            if sender:
                with contextlib.suppress(OSError):
                    self._control.sendto(reply.strip().encode(), sender)

    def control(self, command: str) -> str:
        """Run one text command (the control-socket language); returns a short result.

        ``stats`` returns ``stats()`` as JSON (what the board received, its simulated time).
        """
        words = command.split()
        if not words:
            raise ValueError(f'empty command; {_CONTROL_HELP}')
        verb, args = words[0].lower(), words[1:]

        def need(count: int) -> None:
            if len(args) != count:
                raise ValueError(f'{verb} takes {count} argument(s), got {args}; {_CONTROL_HELP}')

        if verb == 'estop':
            need(1)
            if args[0] not in ('on', 'off'):
                raise ValueError(f'estop takes on|off, got {args[0]!r}')
            (self.press_estop if args[0] == 'on' else self.release_estop)()
        elif verb == 'push':
            need(3)
            self.push(args[0], _number('FORCE_N', args[1]), _number('DURATION_S', args[2]))
        elif verb in ('freeze', 'stall'):
            need(1)
            (self.freeze_sensor if verb == 'freeze' else self.stall_finger)(args[0])
        elif verb in ('corrupt', 'drop'):
            need(1)
            setattr(self, f'{verb}_fraction', _number('FRACTION', args[0]))
        elif verb == 'disconnect':
            need(1)
            self.disconnect(_number('SECONDS', args[0]))
        elif verb == 'clear':
            need(0)
            self.clear()
        elif verb == 'status':
            need(0)
        elif verb == 'stats':
            need(0)
            return json.dumps(self.stats())
        else:
            raise ValueError(f'unknown command {verb!r}; {_CONTROL_HELP}')
        return (
            f'faults={self.board_faults} ({p.fault_names(self.board_faults)}) '
            f'estop={int(self._estop)} port={self.port}'
        )


def send_control(path: str | os.PathLike, command: str, timeout_s: float = 2.0) -> str:
    """Send one command to an emulator's control socket; returns its 'ok ...' reply.

    Raises RuntimeError with the emulator's message on 'error: ...' and TimeoutError when no
    reply comes.
    """
    with tempfile.TemporaryDirectory(prefix='bh_ctl_') as folder:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            client.bind(os.path.join(folder, 'client'))
            client.settimeout(timeout_s)
            client.sendto(command.encode(), str(path))
            try:
                reply = client.recv(4096).decode()
            except TimeoutError as exc:
                raise TimeoutError(f'no reply from {path} within {timeout_s} s') from exc
        finally:
            client.close()
    if reply.startswith('error'):
        raise RuntimeError(f'board emulator refused {command!r}: {reply}')
    return reply


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f'{name} must be a number, got {text!r}') from exc
    if not np.isfinite(value):
        raise ValueError(f'{name} must be finite, got {text!r}')
    return value


def _check_number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be a number, got {value!r}')
    if not np.isfinite(value) or not low <= value <= high:
        raise ValueError(f'{name} must be in [{low}, {high}], got {value!r}')
    return float(value)


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    corrupt = bytearray(data)
    corrupt[rng.randrange(len(corrupt))] ^= rng.randrange(1, 256)
    return bytes(corrupt)


_TYPE_OF = {
    p.HelloAck: p.HELLO_ACK,
    p.State: p.STATE,
    p.FaultReport: p.FAULT,
    p.EstopReport: p.ESTOP,
    p.ResetAck: p.RESET_ACK,
    p.Nack: p.NACK,
}


def _frame_type(frame) -> int:
    return _TYPE_OF.get(type(frame), 0)


def main(argv: list[str] | None = None) -> int:
    """``backhug_board_emulator``: run the emulated board on a pty until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog='backhug_board_emulator',
        description='Emulated BackHug motor board on a pseudo-terminal (MuJoCo physics).',
    )
    parser.add_argument('--user', default='default', help='simulated user (name or YAML path)')
    parser.add_argument('--seed', type=int, default=0, help='simulation and fault-injection seed')
    parser.add_argument('--speed', type=float, default=1.0, help='real-time factor of the physics')
    parser.add_argument('--watchdog-ms', type=float, default=100.0, help='board watchdog, ms')
    parser.add_argument('--overload-n', type=float, default=180.0, help='over-load trip, N')
    parser.add_argument('--drop', type=float, default=0.0, help='fraction of frames lost')
    parser.add_argument('--corrupt', type=float, default=0.0, help='fraction of frames corrupted')
    parser.add_argument('--link', default=None, help='stable symlink to the pty (kept on reopen)')
    parser.add_argument('--control-socket', default=None, help='Unix datagram socket for faults')
    args = parser.parse_args(argv)
    try:
        emulator = BoardEmulator(
            user=args.user,
            seed=args.seed,
            watchdog_s=args.watchdog_ms / 1000.0,
            overload_n=args.overload_n,
            speed=args.speed,
            drop_fraction=args.drop,
            corrupt_fraction=args.corrupt,
            link_path=args.link,
            control_socket=args.control_socket,
        )
    except (ValueError, OSError) as exc:
        print(f'backhug_board_emulator: {exc}', file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(emulator.start(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
