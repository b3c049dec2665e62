"""The motor board's serial protocol: frame codec and stream decoder (pure Python, no I/O).

Both sides of the link use this module: the ``serial`` backend (host) and the board emulator.
The byte layouts, CRC parameters, timing and fault rules are specified for firmware engineers in
docs/board_protocol.md; this module is the reference implementation of that document.

Frame (all multi-byte fields little-endian)::

    0  u8   SYNC0 = 0xBA
    1  u8   SYNC1 = 0xC4
    2  u8   type
    3  u8   seq           sender's frame counter, +1 per frame sent, wraps 255 -> 0
    4  u16  length N      payload bytes, <= MAX_PAYLOAD
    6  u8   header check  CRC-8 (poly 0x07, init 0x00) of bytes 0..5
    7  N    payload
    7+N u16 CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0) of bytes 0..6+N

The header check lets a receiver reject a corrupt length at once (no waiting for a bogus
1000-byte frame) and, with the CRC-16, makes every single-byte corruption of a frame detectable:
a CRC of degree n catches every error burst of n bits or fewer in the bytes it covers.

Encoders take SI units (m, m/s, N, s) and raise ``ProtocolError`` naming the field for NaN/inf,
values outside the encodable range, wrong lengths or too many fingers. ``FrameDecoder.feed``
never raises: it resynchronises on the next sync pair after garbage or a bad CRC and counts what
it dropped.
"""

from __future__ import annotations

import binascii
import math
import operator
import struct
from collections import deque
from dataclasses import dataclass

PROTOCOL_VERSION = 1
SYNC = b'\xba\xc4'
HEADER_SIZE = 7
CRC_SIZE = 2
OVERHEAD = HEADER_SIZE + CRC_SIZE
MAX_PAYLOAD = 1024
MAX_FINGERS = 64
NO_FINGER = 0xFF  # finger index of a board-level FAULT report
MAX_MESSAGE_BYTES = 120

# Frame types: host -> board below 0x80, board -> host from 0x80 (HEARTBEAT both ways).
HELLO = 0x01
COMMAND = 0x02
HEARTBEAT = 0x03
RESET = 0x04
HELLO_ACK = 0x81
STATE = 0x82
FAULT = 0x84
ESTOP = 0x85
RESET_ACK = 0x86
NACK = 0x8F

# Board fault bits: the same values as backhug_interfaces/HardwareStatus FAULT_*.
FAULT_WATCHDOG = 1
FAULT_OVERLOAD = 2
FAULT_OVERTRAVEL = 4
FAULT_ESTOP = 8
FAULT_SENSOR = 16
FAULT_STALL = 32
FAULT_SUPPLY = 64
FAULT_LINK = 128
FAULT_NAMES = {
    FAULT_WATCHDOG: 'WATCHDOG',
    FAULT_OVERLOAD: 'OVERLOAD',
    FAULT_OVERTRAVEL: 'OVERTRAVEL',
    FAULT_ESTOP: 'ESTOP',
    FAULT_SENSOR: 'SENSOR',
    FAULT_STALL: 'STALL',
    FAULT_SUPPLY: 'SUPPLY',
    FAULT_LINK: 'LINK',
}

# STATE board flag bits.
STATE_FLAG_ESTOP = 0x01  # emergency-stop input pressed now
STATE_FLAG_INHIBITED = 0x02  # a latched fault holds every finger retracted until RESET
STATE_FLAG_ARMED = 0x04  # watchdog armed (a valid COMMAND since HELLO/RESET)

# NACK reason codes.
NACK_MALFORMED = 1  # payload length or layout wrong for the frame type
NACK_FINGER_COUNT = 2  # COMMAND finger count differs from the board's
NACK_OUT_OF_RANGE = 3  # a value outside the board's limits
NACK_UNKNOWN_TYPE = 4
NACK_NO_HANDSHAKE = 5  # COMMAND before a HELLO with a matching version
NACK_VERSION = 6  # HELLO with a protocol version the board does not speak

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


class ProtocolError(ValueError):
    """A value cannot be encoded, or a payload cannot be decoded (message names the field)."""


# -- checksums -----------------------------------------------------------------------------------


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8 (poly 0x07, init 0x00, no reflection, xorout 0x00; check('123456789') = 0xF4)."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; check('123456789') = 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


# -- frames --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """Host -> board: start (or restart) a session speaking ``version``."""

    seq: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class HelloAck:
    """Board -> host: the board's protocol version, finger count and identity."""

    seq: int
    version: int
    finger_count: int
    firmware_version: int
    firmware_id: str
    travel_m: float  # upper travel limit of every finger
    overload_trip_n: float  # load at which the board trips OVERLOAD


@dataclass(frozen=True)
class Command:
    """Host -> board: a position target (m) and an enable flag for every finger."""

    seq: int
    position_m: tuple[float, ...]
    enable: tuple[bool, ...]


@dataclass(frozen=True)
class State:
    """Board -> host: one sample of every finger and the board's fault and estop state."""

    seq: int
    board_time_s: float
    ack_seq: int  # seq of the last valid COMMAND the board received
    flags: int  # STATE_FLAG_* bits
    board_faults: int  # FAULT_* bits latched on the board
    position_m: tuple[float, ...]
    velocity_m_s: tuple[float, ...]
    load_n: tuple[float, ...]
    finger_faults: tuple[int, ...]

    @property
    def estop(self) -> bool:
        return bool(self.flags & STATE_FLAG_ESTOP)


@dataclass(frozen=True)
class Heartbeat:
    """Either way: link liveness; the board answers a host HEARTBEAT with its own."""

    seq: int
    time_s: float


@dataclass(frozen=True)
class Reset:
    """Host -> board: clear the latched faults in ``clear_mask`` whose cause has gone."""

    seq: int
    clear_mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class ResetAck:
    """Board -> host: the faults still latched after a RESET (their cause persists)."""

    seq: int
    board_faults: int


@dataclass(frozen=True)
class FaultReport:
    """Board -> host: a fault latched (sent once per latch, STATE carries it continuously)."""

    seq: int
    board_time_s: float
    fault_bits: int  # the bit(s) this report is about
    board_faults: int  # every bit latched after this fault
    finger: int | None  # finger index, None for a board-level fault
    value: float  # the measurement that tripped, SI units (N, m, s)
    message: str


@dataclass(frozen=True)
class EstopReport:
    """Board -> host: the emergency-stop input changed."""

    seq: int
    board_time_s: float
    pressed: bool


@dataclass(frozen=True)
class Nack:
    """Board -> host: a frame was valid on the wire but refused (reason code and text)."""

    seq: int
    rejected_type: int
    rejected_seq: int
    reason: int
    message: str


Frame = (
    Hello
    | HelloAck
    | Command
    | State
    | Heartbeat
    | Reset
    | ResetAck
    | FaultReport
    | EstopReport
    | Nack
)


# -- field checks --------------------------------------------------------------------------------


def _u8(name: str, value) -> int:
    return _int_in(name, value, 0, 255)


def _int_in(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ProtocolError(f'{name} must be an integer, got {value!r}')
    try:
        number = operator.index(value)  # int and numpy integers; floats are refused
    except TypeError as exc:
        raise ProtocolError(f'{name} must be an integer, got {value!r}') from exc
    if not low <= number <= high:
        raise ProtocolError(f'{name} must be in [{low}, {high}], got {number}')
    return number


def _fixed(name: str, value, scale: float, low: int, high: int, unit: str) -> int:  # noqa: PLR0917
    """SI value -> integer count of 1/scale units, with the encodable range checked."""
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f'{name} must be a number, got {value!r}') from exc
    if not math.isfinite(number):
        raise ProtocolError(f'{name} is {number}: every value must be finite')
    count = round(number * scale)
    if not low <= count <= high:
        raise ProtocolError(
            f'{name} = {number!r} is outside the encodable range '
            f'[{low / scale:g}, {high / scale:g}] {unit}'
        )
    return count


def _fixed_list(name: str, values: list, scale: float, low: int, high: int, unit: str) -> list:  # noqa: PLR0917
    """``_fixed`` for every entry: one fast pass, the field-by-field check only on failure."""
    try:
        counts = [round(float(value) * scale) for value in values]
        if all(low <= count <= high for count in counts):
            return counts
    except (TypeError, ValueError, OverflowError):
        pass
    return [_fixed(f'{name}[{i}]', value, scale, low, high, unit) for i, value in enumerate(values)]


def _sequence(name: str, values, count: int | None = None) -> list:
    try:
        items = list(values)
    except TypeError as exc:
        raise ProtocolError(f'{name} must be a sequence, got {values!r}') from exc
    if len(items) > MAX_FINGERS:
        raise ProtocolError(f'{name} has {len(items)} fingers, at most {MAX_FINGERS} fit a frame')
    if count is not None and len(items) != count:
        raise ProtocolError(f'{name} has {len(items)} entries, expected {count}')
    return items


def _text(name: str, text: str) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError(f'{name} must be a str, got {text!r}')
    data = text.encode('utf-8')
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f'{name} is {len(data)} bytes, at most {MAX_MESSAGE_BYTES}')
    return data


def _bits(flags: list[bool]) -> bytes:
    data = bytearray((len(flags) + 7) // 8)
    for index, flag in enumerate(flags):
        if flag:
            data[index // 8] |= 1 << (index % 8)
    return bytes(data)


def _unbits(data: bytes, count: int) -> tuple[bool, ...]:
    return tuple(bool(data[i // 8] >> (i % 8) & 1) for i in range(count))


# -- encoders ------------------------------------------------------------------------------------


def encode_frame(frame_type: int, seq: int, payload: bytes) -> bytes:
    """Wrap ``payload`` in a frame: sync, header with its CRC-8, payload, CRC-16."""
    frame_type = _u8('type', frame_type)
    seq = _u8('seq', seq)
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f'payload is {len(payload)} bytes, at most {MAX_PAYLOAD}')
    header = SYNC + struct.pack('<BBH', frame_type, seq, len(payload))
    header += bytes((crc8(header),))
    body = header + payload
    return body + struct.pack('<H', crc16(body))


def encode_hello(seq: int, version: int = PROTOCOL_VERSION) -> bytes:
    """HELLO: u16 protocol version."""
    return encode_frame(HELLO, seq, struct.pack('<H', _int_in('version', version, 0, 0xFFFF)))


def encode_hello_ack(
    seq: int,
    *,
    version: int,
    finger_count: int,
    firmware_version: int,
    firmware_id: str,
    travel_m: float,
    overload_trip_n: float,
) -> bytes:
    """HELLO_ACK: u16 version, u8 fingers, u8 0, u32 firmware, char[16] id, u32 um, u32 mN."""
    ident = _text('firmware_id', firmware_id)
    if len(ident) > 16:
        raise ProtocolError(f'firmware_id is {len(ident)} bytes, at most 16')
    payload = struct.pack(
        '<HBBI16sII',
        _int_in('version', version, 0, 0xFFFF),
        _int_in('finger_count', finger_count, 1, MAX_FINGERS),
        0,
        _int_in('firmware_version', firmware_version, 0, 0xFFFFFFFF),
        ident,
        _fixed('travel_m', travel_m, 1e6, 0, 0xFFFFFFFF, 'm'),
        _fixed('overload_trip_n', overload_trip_n, 1e3, 0, 0xFFFFFFFF, 'N'),
    )
    return encode_frame(HELLO_ACK, seq, payload)


def encode_command(seq: int, position_m, enable) -> bytes:
    """COMMAND: u8 N, u8 0, ceil(N/8) enable bytes, N x u16 target (um, 0..65535)."""
    positions = _sequence('position_m', position_m)
    flags = _sequence('enable', enable, len(positions))
    if not positions:
        raise ProtocolError('position_m is empty: a COMMAND carries every finger')
    targets = _fixed_list('position_m', positions, 1e6, 0, 0xFFFF, 'm')
    enabled = []
    for index, flag in enumerate(flags):
        if isinstance(flag, float) and not math.isfinite(flag):
            raise ProtocolError(f'enable[{index}] is {flag}: must be a bool')
        enabled.append(bool(flag))
    payload = struct.pack('<BB', len(targets), 0) + _bits(enabled)
    payload += struct.pack(f'<{len(targets)}H', *targets)
    return encode_frame(COMMAND, seq, payload)


def encode_state(
    seq: int,
    *,
    board_time_s: float,
    ack_seq: int,
    flags: int,
    board_faults: int,
    position_m,
    velocity_m_s,
    load_n,
    finger_faults,
) -> bytes:
    """STATE: u64 us, u8 ack, u8 flags, u8 N, u8 0, u32 faults, N x (i32 um, i32 um/s, i32 mN,
    u8 faults)."""
    positions = _sequence('position_m', position_m)
    count = len(positions)
    if count == 0:
        raise ProtocolError('position_m is empty: a STATE carries every finger')
    velocities = _sequence('velocity_m_s', velocity_m_s, count)
    loads = _sequence('load_n', load_n, count)
    faults = _sequence('finger_faults', finger_faults, count)
    payload = bytearray(
        struct.pack(
            '<QBBBBI',
            _fixed('board_time_s', board_time_s, 1e6, 0, 2**64 - 1, 's'),
            _u8('ack_seq', ack_seq),
            _u8('flags', flags),
            count,
            0,
            _int_in('board_faults', board_faults, 0, 0xFFFFFFFF),
        )
    )
    rows = zip(
        _fixed_list('position_m', positions, 1e6, _I32_MIN, _I32_MAX, 'm'),
        _fixed_list('velocity_m_s', velocities, 1e6, _I32_MIN, _I32_MAX, 'm/s'),
        _fixed_list('load_n', loads, 1e3, _I32_MIN, _I32_MAX, 'N'),
        [_u8(f'finger_faults[{i}]', fault) for i, fault in enumerate(faults)],
        strict=True,
    )
    payload += struct.pack(f'<{"iiiB" * count}', *(field for row in rows for field in row))
    return encode_frame(STATE, seq, bytes(payload))


def encode_heartbeat(seq: int, time_s: float) -> bytes:
    """HEARTBEAT: u64 sender time, us."""
    us = _fixed('time_s', time_s, 1e6, 0, 2**64 - 1, 's')
    return encode_frame(HEARTBEAT, seq, struct.pack('<Q', us))


def encode_reset(seq: int, clear_mask: int = 0xFFFFFFFF) -> bytes:
    """RESET: u32 mask of the latched fault bits to clear."""
    mask = _int_in('clear_mask', clear_mask, 0, 0xFFFFFFFF)
    return encode_frame(RESET, seq, struct.pack('<I', mask))


def encode_reset_ack(seq: int, board_faults: int) -> bytes:
    """RESET_ACK: u32 faults still latched."""
    faults = _int_in('board_faults', board_faults, 0, 0xFFFFFFFF)
    return encode_frame(RESET_ACK, seq, struct.pack('<I', faults))


def encode_fault(
    seq: int,
    *,
    board_time_s: float,
    fault_bits: int,
    board_faults: int,
    finger: int | None,
    value: float,
    message: str,
) -> bytes:
    """FAULT: u64 us, u32 bits, u32 all faults, u8 finger (0xFF board), f32 value, u8 len, text."""
    text = _text('message', message)
    finger_byte = NO_FINGER if finger is None else _int_in('finger', finger, 0, MAX_FINGERS - 1)
    number = float(value)
    if not math.isfinite(number) or abs(number) > 3.4e38:
        raise ProtocolError(f'value is {number}: must be a finite float32')
    payload = struct.pack(
        '<QIIBfB',
        _fixed('board_time_s', board_time_s, 1e6, 0, 2**64 - 1, 's'),
        _int_in('fault_bits', fault_bits, 0, 0xFFFFFFFF),
        _int_in('board_faults', board_faults, 0, 0xFFFFFFFF),
        finger_byte,
        number,
        len(text),
    )
    return encode_frame(FAULT, seq, payload + text)


def encode_estop(seq: int, *, board_time_s: float, pressed: bool) -> bytes:
    """ESTOP: u64 us, u8 pressed."""
    us = _fixed('board_time_s', board_time_s, 1e6, 0, 2**64 - 1, 's')
    return encode_frame(ESTOP, seq, struct.pack('<QB', us, 1 if pressed else 0))


def encode_nack(seq: int, *, rejected_type: int, rejected_seq: int, reason: int, message: str):
    """NACK: u8 rejected type, u8 rejected seq, u8 reason, u8 len, text."""
    text = _text('message', message)
    payload = struct.pack(
        '<BBBB',
        _u8('rejected_type', rejected_type),
        _u8('rejected_seq', rejected_seq),
        _u8('reason', reason),
        len(text),
    )
    return encode_frame(NACK, seq, payload + text)


def encode(frame: Frame) -> bytes:
    """Encode any frame dataclass (the inverse of what FrameDecoder returns)."""
    if isinstance(frame, Hello):
        return encode_hello(frame.seq, frame.version)
    if isinstance(frame, HelloAck):
        return encode_hello_ack(
            frame.seq,
            version=frame.version,
            finger_count=frame.finger_count,
            firmware_version=frame.firmware_version,
            firmware_id=frame.firmware_id,
            travel_m=frame.travel_m,
            overload_trip_n=frame.overload_trip_n,
        )
    if isinstance(frame, Command):
        return encode_command(frame.seq, frame.position_m, frame.enable)
    if isinstance(frame, State):
        return encode_state(
            frame.seq,
            board_time_s=frame.board_time_s,
            ack_seq=frame.ack_seq,
            flags=frame.flags,
            board_faults=frame.board_faults,
            position_m=frame.position_m,
            velocity_m_s=frame.velocity_m_s,
            load_n=frame.load_n,
            finger_faults=frame.finger_faults,
        )
    if isinstance(frame, Heartbeat):
        return encode_heartbeat(frame.seq, frame.time_s)
    if isinstance(frame, Reset):
        return encode_reset(frame.seq, frame.clear_mask)
    if isinstance(frame, ResetAck):
        return encode_reset_ack(frame.seq, frame.board_faults)
    if isinstance(frame, FaultReport):
        return encode_fault(
            frame.seq,
            board_time_s=frame.board_time_s,
            fault_bits=frame.fault_bits,
            board_faults=frame.board_faults,
            finger=frame.finger,
            value=frame.value,
            message=frame.message,
        )
    if isinstance(frame, EstopReport):
        return encode_estop(frame.seq, board_time_s=frame.board_time_s, pressed=frame.pressed)
    if isinstance(frame, Nack):
        return encode_nack(
            frame.seq,
            rejected_type=frame.rejected_type,
            rejected_seq=frame.rejected_seq,
            reason=frame.reason,
            message=frame.message,
        )
    raise ProtocolError(f'frame must be one of the protocol dataclasses, got {frame!r}')


# -- payload decoders ----------------------------------------------------------------------------


def _need(name: str, payload: bytes, size: int, exact: bool = True) -> None:
    if (len(payload) != size) if exact else (len(payload) < size):
        relation = '' if exact else 'at least '
        raise ProtocolError(f'{name} payload is {len(payload)} bytes, expected {relation}{size}')


def _message(name: str, payload: bytes, offset: int) -> str:
    length = payload[offset - 1]
    _need(name, payload, offset + length)
    return payload[offset:].decode('utf-8', errors='replace')


def decode_payload(frame_type: int, seq: int, payload: bytes) -> Frame:
    """Decode one frame's payload (after the CRCs passed). Raises ProtocolError on bad layout."""
    if frame_type == HELLO:
        _need('HELLO', payload, 2)
        return Hello(seq, struct.unpack('<H', payload)[0])
    if frame_type == HELLO_ACK:
        _need('HELLO_ACK', payload, 32)
        version, count, _, firmware, ident, travel_um, trip_mn = struct.unpack(
            '<HBBI16sII', payload
        )
        if not 1 <= count <= MAX_FINGERS:
            raise ProtocolError(f'HELLO_ACK finger_count {count} not in [1, {MAX_FINGERS}]')
        ident_text = ident.rstrip(b'\0').decode('utf-8', errors='replace')
        return HelloAck(seq, version, count, firmware, ident_text, travel_um / 1e6, trip_mn / 1e3)
    if frame_type == COMMAND:
        _need('COMMAND', payload, 2, exact=False)
        count = payload[0]
        if not 1 <= count <= MAX_FINGERS:
            raise ProtocolError(f'COMMAND finger count {count} not in [1, {MAX_FINGERS}]')
        mask_size = (count + 7) // 8
        _need('COMMAND', payload, 2 + mask_size + 2 * count)
        enable = _unbits(payload[2 : 2 + mask_size], count)
        targets = struct.unpack_from(f'<{count}H', payload, 2 + mask_size)
        return Command(seq, tuple(t / 1e6 for t in targets), enable)
    if frame_type == STATE:
        _need('STATE', payload, 16, exact=False)
        time_us, ack, flags, count, _, faults = struct.unpack_from('<QBBBBI', payload)
        if not 1 <= count <= MAX_FINGERS:
            raise ProtocolError(f'STATE finger count {count} not in [1, {MAX_FINGERS}]')
        _need('STATE', payload, 16 + 13 * count)
        rows = [struct.unpack_from('<iiiB', payload, 16 + 13 * i) for i in range(count)]
        return State(
            seq,
            time_us / 1e6,
            ack,
            flags,
            faults,
            tuple(r[0] / 1e6 for r in rows),
            tuple(r[1] / 1e6 for r in rows),
            tuple(r[2] / 1e3 for r in rows),
            tuple(r[3] for r in rows),
        )
    if frame_type == HEARTBEAT:
        _need('HEARTBEAT', payload, 8)
        return Heartbeat(seq, struct.unpack('<Q', payload)[0] / 1e6)
    if frame_type == RESET:
        _need('RESET', payload, 4)
        return Reset(seq, struct.unpack('<I', payload)[0])
    if frame_type == RESET_ACK:
        _need('RESET_ACK', payload, 4)
        return ResetAck(seq, struct.unpack('<I', payload)[0])
    if frame_type == FAULT:
        _need('FAULT', payload, 22, exact=False)
        time_us, bits, faults, finger, value, _ = struct.unpack_from('<QIIBfB', payload)
        return FaultReport(
            seq,
            time_us / 1e6,
            bits,
            faults,
            None if finger == NO_FINGER else finger,
            value,
            _message('FAULT', payload, 22),
        )
    if frame_type == ESTOP:
        _need('ESTOP', payload, 9)
        time_us, pressed = struct.unpack('<QB', payload)
        return EstopReport(seq, time_us / 1e6, bool(pressed))
    if frame_type == NACK:
        _need('NACK', payload, 4, exact=False)
        rejected_type, rejected_seq, reason, _ = struct.unpack_from('<BBBB', payload)
        return Nack(seq, rejected_type, rejected_seq, reason, _message('NACK', payload, 4))
    raise ProtocolError(f'unknown frame type 0x{frame_type:02X}')


@dataclass(frozen=True)
class RejectedFrame:
    """A frame whose CRCs passed but whose payload could not be decoded (for NACKs and logs)."""

    frame_type: int
    seq: int
    reason: str
    code: int


class FrameDecoder:
    """Streaming decoder: ``feed(bytes)`` returns the complete valid frames found so far.

    Partial frames wait in a buffer for the rest. A byte that cannot start a frame, a header
    whose CRC-8 fails, a length above MAX_PAYLOAD or a CRC-16 mismatch drops one byte and the
    search restarts at the next sync pair, so one corrupt frame costs that frame only.
    Counters: ``frames`` (valid frames returned), ``crc_errors`` (header or body check failed),
    ``length_errors``, ``garbage_bytes`` (bytes skipped while resynchronising), ``malformed``
    (checks passed but the payload did not decode; kept in ``rejected``).
    """

    def __init__(self, max_rejected: int = 32) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.crc_errors = 0
        self.length_errors = 0
        self.garbage_bytes = 0
        self.malformed = 0
        self.rejected: deque[RejectedFrame] = deque(maxlen=max_rejected)

    def reset(self) -> None:
        """Drop any buffered partial frame (after reopening the port); counters stay."""
        self._buffer.clear()

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete, in order. Never raises."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        while True:
            start = buffer.find(SYNC)
            if start < 0:
                # Keep a trailing first sync byte: its partner may arrive next.
                keep = 1 if buffer[-1:] == SYNC[:1] else 0
                self.garbage_bytes += len(buffer) - keep
                del buffer[: len(buffer) - keep]
                return frames
            if start:
                self.garbage_bytes += start
                del buffer[:start]
            if len(buffer) < HEADER_SIZE:
                return frames
            if crc8(buffer[: HEADER_SIZE - 1]) != buffer[HEADER_SIZE - 1]:
                self.crc_errors += 1
                self._skip()
                continue
            frame_type, seq, length = struct.unpack_from('<BBH', buffer, 2)
            if length > MAX_PAYLOAD:
                self.length_errors += 1
                self._skip()
                continue
            end = HEADER_SIZE + length + CRC_SIZE
            if len(buffer) < end:
                return frames
            (received,) = struct.unpack_from('<H', buffer, end - CRC_SIZE)
            if crc16(bytes(buffer[: end - CRC_SIZE])) != received:
                self.crc_errors += 1
                self._skip()
                continue
            payload = bytes(buffer[HEADER_SIZE : end - CRC_SIZE])
            del buffer[:end]
            try:
                frames.append(decode_payload(frame_type, seq, payload))
                self.frames += 1
            except ProtocolError as exc:
                self.malformed += 1
                known = frame_type in _KNOWN_TYPES
                code = NACK_MALFORMED if known else NACK_UNKNOWN_TYPE
                self.rejected.append(RejectedFrame(frame_type, seq, str(exc), code))
            except (struct.error, ValueError, IndexError) as exc:  # defensive: never raise
                self.malformed += 1
                self.rejected.append(RejectedFrame(frame_type, seq, str(exc), NACK_MALFORMED))

    def _skip(self) -> None:
        self.garbage_bytes += 1
        del self._buffer[:1]


_KNOWN_TYPES = {HELLO, COMMAND, HEARTBEAT, RESET, HELLO_ACK, STATE, FAULT, ESTOP, RESET_ACK, NACK}


def fault_names(bits: int) -> str:
    """'OVERLOAD|ESTOP' for a FAULT_* mask ('none' for 0)."""
    names = [name for bit, name in FAULT_NAMES.items() if bits & bit]
    unknown = bits & ~sum(FAULT_NAMES)
    if unknown:
        names.append(f'0x{unknown:X}')
    return '|'.join(names) or 'none'
