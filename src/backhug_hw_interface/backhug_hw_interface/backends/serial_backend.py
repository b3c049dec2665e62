"""The ``serial`` backend: the motor board over a serial port, speaking docs/board_protocol.md.

``open()`` opens the port and does the version handshake (HELLO / HELLO_ACK), refusing a board
with another protocol version or finger count. A background reader thread decodes every frame
and keeps the latest STATE, fault reports and link counters, so ``read()`` never blocks.
``write()`` validates the targets (finite, right length, inside the board's travel) and sends one
COMMAND; it never raises for link trouble: ``read()`` reports it (``link_ok``, FAULT_LINK).

The link is declared down on an I/O error (unplugged) or after ``link_timeout_s`` without a valid
frame; while it is down no COMMAND is sent (the board's watchdog retracts), and the reader keeps
reopening the port and redoing the handshake every ``reconnect_period_s``. When a handshake
succeeds again the link is up and ``reconnects`` counts it; the board's latched faults (its
watchdog, at least) stay until ``reset_board()``, so motion resumes only after a reset.

After ``reset_board()`` the STATEs already on their way still carry the faults the RESET is
clearing; ``read()`` does not report those board faults until the board's RESET_ACK says which
stay latched (then at once, before the next STATE), or ``reset_ack_timeout_s`` passes without it
(the RESET was lost: the old faults are reported again). Without this, hw_interface latched a new
safe stop from a stale STATE right after its own reset. The board stays the authority meanwhile:
it holds every finger retracted until it has processed the RESET.

Joint order: ``joint_names`` may be in any order; the board's finger order is the description's
canonical order (all left rows head to tail, then all right rows), derived from the names
(``finger_<side>_<row>_joint``) unless ``board_order`` names it explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
import time
from collections import deque

import numpy as np
import serial

from backhug_hw_interface import protocol as p
from backhug_hw_interface.backends.base import Backend, BackendError, HardwareState

#: Seconds a link event (lost, restored, NACK, estop edge) stays in fault_messages.
EVENT_MESSAGE_S = 10.0
_NAME = re.compile(r'^finger_([lr])_(\d+)_joint$')


def canonical_order(joint_names: list[str]) -> list[str]:
    """The description's finger order (left rows head to tail, then right rows) of these names."""
    keys = {}
    for name in joint_names:
        match = _NAME.match(name)
        if match is None:
            raise BackendError(
                f'serial backend: joint {name!r} is not a finger_<side>_<row>_joint name; '
                'pass board_order= to map it onto the board'
            )
        keys[name] = (match.group(1) == 'r', int(match.group(2)))
    return sorted(joint_names, key=keys.__getitem__)


class SerialBackend(Backend):
    """Backend over the motor board's serial link (pyserial)."""

    def __init__(
        self,
        joint_names: list[str],
        *,
        port: str,
        baudrate: int = 1_000_000,
        handshake_timeout_s: float = 1.0,
        link_timeout_s: float = 0.1,
        reconnect_period_s: float = 0.5,
        reset_ack_timeout_s: float = 0.5,
        board_order: list[str] | None = None,
    ) -> None:
        super().__init__(joint_names)
        self.port = str(port)
        self.baudrate = int(baudrate)
        self.handshake_timeout_s = float(handshake_timeout_s)
        self.link_timeout_s = float(link_timeout_s)
        self.reconnect_period_s = float(reconnect_period_s)
        self.reset_ack_timeout_s = float(reset_ack_timeout_s)
        self._board_order = None if board_order is None else list(board_order)
        #: The board's HELLO_ACK (version, finger count, firmware id, travel, trip level).
        self.board_info: p.HelloAck | None = None
        #: Times the link came back (handshake done again) after it was lost.
        self.reconnects = 0
        #: Board frames missing according to the board's sequence numbers.
        self.lost_frames = 0
        #: COMMAND frames the board refused (NACK), and the last reason.
        self.nacks = 0
        self.last_nack: str | None = None
        #: RESET_ACKs received, and the faults the last one said were still latched.
        self.reset_acks = 0
        self.last_reset_faults: int | None = None
        #: time.monotonic() of the RESET sent and not answered yet (None: none outstanding).
        self._reset_sent: float | None = None
        #: Latest board STATE as decoded (board order), None before the first.
        self.last_state: p.State | None = None
        self._serial: serial.Serial | None = None
        self._io_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handshake = threading.Event()
        self._handshake_error: str | None = None
        self._decoder = p.FrameDecoder()
        self._to_board = np.zeros(0, dtype=int)
        self._from_board = np.zeros(0, dtype=int)
        self._tx_seq = 0
        self._rx_seq: int | None = None
        self._link_ok = False
        self._ever_up = False
        self._link_reason = 'not open'
        self._io_failed: str | None = None
        self._last_valid = 0.0
        self._silence_mark = 0.0
        self._next_attempt = 0.0
        self._state_stamp = 0.0
        self._fault_messages: dict[tuple[int, int | None], str] = {}
        # Recent link events (lost, restored, NACK, estop edges): (time.monotonic(), text), shown
        # in fault_messages for EVENT_MESSAGE_S or until reset_board().
        self._messages: deque[tuple[float, str]] = deque(maxlen=8)
        self.frames_rx = 0
        self.frames_tx = 0
        self.timeouts = 0
        #: Frames not (fully) sent because the port's output buffer was full.
        self.tx_overflows = 0

    # -- Backend -------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port and handshake; BackendError says why it failed."""
        if self._thread is not None:
            raise BackendError('serial backend: already open')
        if len(set(self.joint_names)) != len(self.joint_names):
            raise BackendError(f'serial backend: joint_names repeat a joint: {self.joint_names}')
        order = self._board_order or canonical_order(self.joint_names)
        if sorted(order) != sorted(self.joint_names):
            raise BackendError(
                f'serial backend: board_order {order} is not a permutation of {self.joint_names}'
            )
        # board finger i is joint _from_board[i]; joint j is board finger _to_board[j]
        self._from_board = np.array([self.joint_names.index(name) for name in order])
        self._to_board = np.argsort(self._from_board)
        self._open_port()
        self._stop.clear()
        self._handshake.clear()
        self._handshake_error = None
        self._ever_up = False  # a fresh open is not a reconnect
        self._thread = threading.Thread(target=self._reader, name='serial_backend', daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.handshake_timeout_s
        self._send_hello()
        while not self._handshake.wait(0.2):
            if time.monotonic() >= deadline:
                self._handshake_error = (
                    f'no HELLO_ACK from {self.port} within {self.handshake_timeout_s} s '
                    '(no board on this port, or it does not speak the protocol)'
                )
                break
            self._send_hello()
        if self._handshake_error is not None:
            error = self._handshake_error
            self.close()
            raise BackendError(f'serial backend: {error}')

    def close(self) -> None:
        """Send a retract COMMAND if the link is up, stop the reader, close the port."""
        if self._link_ok and self.joint_count:
            self._send_command(np.zeros(self.joint_count), np.zeros(self.joint_count, bool))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close_port()
        self._link_ok = False
        self._link_reason = 'closed'

    def read(self) -> HardwareState:
        """The latest board state in joint order, with the link's health (never blocks)."""
        if self._thread is None:
            raise BackendError('serial backend is not open (call open() first)')
        alive = self._thread.is_alive()
        with self._lock:
            state = self.last_state
            silence_s = time.monotonic() - self._last_valid
            # Judged here too, not only by the reader thread: a reader that died or hangs must
            # not leave a stale state looking healthy.
            link_ok = self._link_ok and alive and silence_s < self.link_timeout_s
            if self._link_ok and not link_ok:
                self._link_reason = (
                    'serial reader thread stopped'
                    if not alive
                    else f'no valid frame from the board for {silence_s * 1000:.0f} ms'
                )
            recent = time.monotonic() - EVENT_MESSAGE_S
            events = [text for stamp, text in self._messages if stamp >= recent]
            messages = list(self._fault_messages.values()) + events
            if not link_ok:
                messages.insert(0, f'link to {self.port} down: {self._link_reason}')
            counters = {
                'frames_rx': self.frames_rx,
                'frames_tx': self.frames_tx,
                'crc_errors': self._decoder.crc_errors + self._decoder.length_errors,
                'timeouts': self.timeouts,
            }
            stamp = self._state_stamp
            if self._reset_sent is not None and (
                not link_ok or time.monotonic() - self._reset_sent > self.reset_ack_timeout_s
            ):
                self._reset_sent = None  # no answer: the board's last word stands again
            # A RESET is on its way: the faults in the STATEs before its answer are stale.
            reset_pending = self._reset_sent is not None
        if state is None:
            result = HardwareState.zeros(self.joint_count, stamp_s=time.monotonic())
            result.link_ok = link_ok
            result.board_faults = 0 if link_ok else p.FAULT_LINK
        else:
            order = self._from_board
            position = np.empty(self.joint_count)
            velocity = np.empty(self.joint_count)
            load = np.empty(self.joint_count)
            faults = np.empty(self.joint_count, dtype=np.uint32)
            position[order] = state.position_m
            velocity[order] = state.velocity_m_s
            load[order] = state.load_n
            faults[order] = state.finger_faults
            result = HardwareState(
                stamp_s=stamp,
                position_m=position,
                velocity_m_s=velocity,
                effort_n=load,
                link_ok=link_ok,
                estop=state.estop,
                board_faults=(0 if reset_pending else state.board_faults)
                | (0 if link_ok else p.FAULT_LINK),
                finger_faults=faults,
            )
        result.fault_messages = messages
        for name, value in counters.items():
            setattr(result, name, value)
        return result

    def write(self, position_m: np.ndarray, enable: np.ndarray) -> None:
        """Send targets (m) and enables for every joint; BackendError for invalid input."""
        if self._thread is None:
            raise BackendError('serial backend is not open (call open() first)')
        try:
            position = np.asarray(position_m, dtype=float)
            flags = np.asarray(enable)
        except (TypeError, ValueError) as exc:
            raise BackendError(f'serial backend: targets must be numbers: {exc}') from exc
        for name, array in (('position_m', position), ('enable', flags)):
            if array.shape != (self.joint_count,):
                raise BackendError(
                    f'serial backend: {name} must have {self.joint_count} entries, '
                    f'got shape {array.shape}'
                )
        bad = np.flatnonzero(~np.isfinite(position))
        if bad.size:
            raise BackendError(
                f'serial backend: position_m[{bad[0]}] ({self.joint_names[bad[0]]}) is '
                f'{position[bad[0]]}: every target must be finite; nothing sent'
            )
        if flags.dtype != bool:
            if not np.all(np.isfinite(flags.astype(float))):
                raise BackendError('serial backend: enable must be booleans; nothing sent')
            flags = flags.astype(float) != 0.0
        travel = self.board_info.travel_m if self.board_info is not None else np.inf
        outside = np.flatnonzero((position < -5e-7) | (position > travel + 5e-7))
        if outside.size:
            index = int(outside[0])
            raise BackendError(
                f'serial backend: position_m[{index}] ({self.joint_names[index]}) = '
                f'{position[index]} m is outside the board travel [0, {travel}] m; nothing sent'
            )
        if not self._link_ok:
            return  # the board's watchdog retracts; read() reports the link
        self._send_command(np.clip(position, 0.0, travel), flags)

    def reset_board(self) -> None:
        """Ask the board to clear its latched faults (those whose cause has gone)."""
        with self._lock:
            self._messages.clear()  # the operator acknowledged the events
            self._reset_sent = time.monotonic()
        self._send(p.encode_reset(self._next_seq()))

    # -- internals -----------------------------------------------------------------------------

    def _send_command(self, position: np.ndarray, flags: np.ndarray) -> None:
        try:
            frame = p.encode_command(
                self._next_seq(),
                position[self._from_board].tolist(),
                flags[self._from_board].tolist(),
            )
        except p.ProtocolError as exc:
            raise BackendError(f'serial backend: {exc}; nothing sent') from exc
        self._send(frame)

    def _send_hello(self) -> None:
        self._send(p.encode_hello(self._next_seq()))

    def _send(self, frame: bytes) -> None:
        with self._io_lock:
            port = self._serial
            if port is None:
                return
            # os.write on pyserial's non-blocking descriptor: never blocks the control loop
            # (pyserial's write raises a spurious 'Write timeout' when the thread is descheduled
            # past write_timeout even though every byte went out).
            try:
                written = os.write(port.fd, frame)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._io_failed = f'write failed: {exc}'
                return
        with self._lock:
            if written == len(frame):
                self.frames_tx += 1
            else:  # output buffer full (board not reading): the frame is lost, counted
                self.tx_overflows += 1

    def _event(self, text: str) -> None:
        """Record a link event for fault_messages (caller holds self._lock)."""
        self._messages.append((time.monotonic(), text))

    def _next_seq(self) -> int:
        with self._lock:
            seq = self._tx_seq
            self._tx_seq = (seq + 1) & 0xFF
        return seq

    def _open_port(self) -> None:
        try:
            port = serial.Serial(self.port, self.baudrate, timeout=0.01, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BackendError(f'serial backend: cannot open {self.port}: {exc}') from exc
        port.reset_input_buffer()
        self._decoder.reset()
        self._rx_seq = None
        self._io_failed = None
        with self._io_lock:
            self._serial = port

    def _close_port(self) -> None:
        with self._io_lock:
            port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def _link_down(self, reason: str) -> None:
        with self._lock:
            if self._link_ok:
                self._event(f'link lost: {reason}')
            self._link_ok = False
            self._link_reason = reason

    def _reader(self) -> None:
        try:
            self._read_loop()
        except Exception as exc:  # a bug here must show as a dead link, not a frozen state
            self._link_down(f'serial reader failed: {type(exc).__name__}: {exc}')
            raise

    def _read_loop(self) -> None:
        now = time.monotonic()
        self._last_valid = self._silence_mark = now
        self._next_attempt = now + self.reconnect_period_s
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                now = time.monotonic()
                if now >= self._next_attempt:
                    self._next_attempt = now + self.reconnect_period_s
                    try:
                        self._open_port()
                        self._send_hello()
                    except BackendError as exc:
                        with self._lock:
                            self._link_reason = f'unplugged, reopening failed: {exc}'
                self._check_silence(time.monotonic())
                self._stop.wait(0.01)
                continue
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError) as exc:
                self._io_failed = f'read failed: {exc}'
                data = b''
            if self._io_failed is not None:
                self._link_down(f'I/O error on {self.port} ({self._io_failed})')
                self._close_port()
                self._next_attempt = time.monotonic() + self.reconnect_period_s
                continue
            now = time.monotonic()
            if data:
                for frame in self._decoder.feed(data):
                    self._handle(frame, now)
            self._check_silence(now)
            if not self._link_ok and now >= self._next_attempt:
                self._next_attempt = now + self.reconnect_period_s
                self._send_hello()

    def _check_silence(self, now: float) -> None:
        """Count each link_timeout_s without a valid frame; the first one drops the link."""
        if now - self._silence_mark < self.link_timeout_s:
            return
        with self._lock:
            self.timeouts += 1
        self._silence_mark = now
        if self._link_ok:
            silence_ms = (now - self._last_valid) * 1000
            self._link_down(f'no valid frame from the board for {silence_ms:.0f} ms')

    def _handle(self, frame, now: float) -> None:
        self._last_valid = self._silence_mark = now
        with self._lock:
            self.frames_rx += 1
            if self._rx_seq is not None and not isinstance(frame, p.HelloAck):
                self.lost_frames += (frame.seq - self._rx_seq - 1) & 0xFF
            self._rx_seq = frame.seq
        if isinstance(frame, p.State):
            with self._lock:
                self.last_state = frame
                self._state_stamp = now
                for key in [k for k in self._fault_messages if not k[0] & frame.board_faults]:
                    del self._fault_messages[key]
        elif isinstance(frame, p.HelloAck):
            self._hello_ack(frame)
        elif isinstance(frame, p.FaultReport):
            with self._lock:
                self._fault_messages[(frame.fault_bits, frame.finger)] = (
                    f'board {p.fault_names(frame.fault_bits)}: {frame.message}'
                )
        elif isinstance(frame, p.EstopReport):
            with self._lock:
                state = 'pressed' if frame.pressed else 'released'
                self._event(f'emergency stop {state} at board time {frame.board_time_s}')
        elif isinstance(frame, p.Nack):
            with self._lock:
                self.nacks += 1
                self.last_nack = (
                    f'board refused frame type 0x{frame.rejected_type:02X} seq '
                    f'{frame.rejected_seq} (reason {frame.reason}): {frame.message}'
                )
                self._event(self.last_nack)
        elif isinstance(frame, p.ResetAck):
            with self._lock:
                self.reset_acks += 1
                self.last_reset_faults = frame.board_faults
                self._reset_sent = None
                if self.last_state is not None:  # the answer is newer than that STATE
                    self.last_state = dataclasses.replace(
                        self.last_state, board_faults=frame.board_faults
                    )
                for key in [k for k in self._fault_messages if not k[0] & frame.board_faults]:
                    del self._fault_messages[key]

    def _hello_ack(self, frame: p.HelloAck) -> None:
        error = None
        if frame.version != p.PROTOCOL_VERSION:
            error = (
                f'board on {self.port} speaks protocol version {frame.version}, this host '
                f'speaks {p.PROTOCOL_VERSION} (firmware {frame.firmware_id!r})'
            )
        elif frame.finger_count != self.joint_count:
            error = (
                f'board on {self.port} has {frame.finger_count} fingers, hw_interface drives '
                f'{self.joint_count} joints'
            )
        with self._lock:
            if error is not None:
                self._link_ok = False
                self._link_reason = error
                self._handshake_error = error
            else:
                self.board_info = frame
                if not self._link_ok and self._ever_up:
                    self.reconnects += 1
                    self._event(f'link to {self.port} restored (handshake done)')
                self._link_ok = True
                self._ever_up = True
                self._link_reason = ''
        self._handshake.set()
