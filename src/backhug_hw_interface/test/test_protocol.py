"""The board protocol codec: round trips, corruption detection, resync, range checks, fuzz."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backhug_hw_interface import protocol as p

# BACKHUG_FUZZ_EXAMPLES=N (make faults): a long fuzz run, N examples per property.
LONG = int(os.environ.get('BACKHUG_FUZZ_EXAMPLES', '0'))
FAST = settings(
    max_examples=LONG or 150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

seqs = st.integers(0, 255)
counts = st.integers(1, p.MAX_FINGERS)
times = st.floats(0.0, 1e7).map(lambda t: round(t, 6))
u32 = st.integers(0, 0xFFFFFFFF)
texts = st.text(max_size=30)


def _micro(low: float, high: float, scale: float = 1e6):
    """Values already on the wire's grid, so a round trip gives them back exactly."""
    return st.integers(round(low * scale), round(high * scale)).map(lambda n: n / scale)


@st.composite
def commands(draw):
    count = draw(counts)
    return p.Command(
        draw(seqs),
        tuple(draw(st.lists(_micro(0.0, 0.065535), min_size=count, max_size=count))),
        tuple(draw(st.lists(st.booleans(), min_size=count, max_size=count))),
    )


@st.composite
def states(draw):
    count = draw(counts)

    def column(strategy):
        return tuple(draw(st.lists(strategy, min_size=count, max_size=count)))

    return p.State(
        draw(seqs),
        draw(times),
        draw(seqs),
        draw(st.integers(0, 7)),
        draw(u32),
        column(_micro(-0.01, 0.07)),
        column(_micro(-1.0, 1.0)),
        column(_micro(-2000.0, 2000.0, 1e3)),
        column(st.integers(0, 255)),
    )


frames = st.one_of(
    st.builds(p.Hello, seqs, st.integers(0, 0xFFFF)),
    st.builds(
        p.HelloAck,
        seqs,
        st.integers(0, 0xFFFF),
        counts,
        u32,
        st.text(alphabet='abcdefXYZ-_.0123456789', max_size=16),
        _micro(0.0, 0.1),
        _micro(0.0, 1000.0, 1e3),
    ),
    commands(),
    states(),
    st.builds(p.Heartbeat, seqs, times),
    st.builds(p.Reset, seqs, u32),
    st.builds(p.ResetAck, seqs, u32),
    st.builds(
        p.FaultReport,
        seqs,
        times,
        u32,
        u32,
        st.one_of(st.none(), st.integers(0, p.MAX_FINGERS - 1)),
        st.floats(-1e6, 1e6, width=32),
        texts,
    ),
    st.builds(p.EstopReport, seqs, times, st.booleans()),
    st.builds(p.Nack, seqs, st.integers(0, 255), seqs, st.integers(0, 255), texts),
)


def _decode_all(data: bytes) -> tuple[list, p.FrameDecoder]:
    decoder = p.FrameDecoder()
    return decoder.feed(data), decoder


def test_crc_parameters_match_their_catalogue_check_values() -> None:
    # The check values of the CRC catalogue (reveng) for the ASCII string '123456789'.
    assert p.crc16(b'123456789') == 0x29B1  # CRC-16/CCITT-FALSE (= CRC-16/IBM-3740)
    assert p.crc8(b'123456789') == 0xF4  # CRC-8 (SMBus)


DOCUMENT = Path(__file__).resolve().parents[3] / 'docs' / 'board_protocol.md'


@pytest.mark.parametrize(
    ('frame', 'expected'),
    [
        (
            p.Command(7, (0.0, 0.012345, 0.04), (True, False, True)),
            'ba c4 02 07 09 00 03 | 03 00 05 | 00 00 39 30 40 9c | d9 27',
        ),
        (p.Hello(0, 1), 'ba c4 01 00 02 00 b8 01 00 eb 20'),
        (p.Reset(8), 'ba c4 04 08 04 00 d9 ff ff ff ff 66 de'),
        (p.Heartbeat(9, 0.25), 'ba c4 03 09 08 00 2c 90 d0 03 00 00 00 00 00 16 0a'),
        (p.EstopReport(3, 2.0, True), 'ba c4 85 03 09 00 fb 80 84 1e 00 00 00 00 00 01 5f 2d'),
        (
            p.State(5, 1.5, 7, 0, 0, (0.012345,), (-0.001,), (42.5,), (0,)),
            'ba c4 82 05 1d 00 e7 60 e3 16 00 00 00 00 00 07 00 01 00 00 00 00 00 39 30 00 00 18 '
            'fc ff ff 04 a6 00 00 00 bd 45',
        ),
    ],
)
def test_worked_examples_of_the_protocol_document(frame, expected) -> None:
    assert p.encode(frame).hex(' ') == expected.replace(' |', '')
    if DOCUMENT.exists():  # the source tree (not an installed package): the document agrees
        assert expected in DOCUMENT.read_text(encoding='utf-8')


@FAST
@given(frames)
def test_every_frame_type_round_trips(frame) -> None:
    data = p.encode(frame)
    decoded, decoder = _decode_all(data)
    assert decoded == [frame]
    assert decoder.crc_errors == decoder.garbage_bytes == decoder.malformed == 0
    assert p.encode(decoded[0]) == data


@FAST
@given(frames, st.data())
def test_every_single_byte_corruption_is_detected(frame, data) -> None:
    encoded = p.encode(frame)
    # Every position of the frame, each with a random non-zero error pattern.
    for position in range(len(encoded)):
        error = data.draw(st.integers(1, 255), label=f'xor at {position}')
        corrupt = bytearray(encoded)
        corrupt[position] ^= error
        decoded, decoder = _decode_all(bytes(corrupt))
        assert decoded == [], f'byte {position} ^ 0x{error:02X} decoded as {decoded}'
        assert decoder.crc_errors + decoder.length_errors + decoder.garbage_bytes > 0


@FAST
@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_decoder_resynchronises_after_garbage_anywhere(frame_list, data) -> None:
    garbage = st.binary(max_size=200).map(lambda b: b.replace(p.SYNC, b''))
    stream = data.draw(garbage, label='prefix')
    for frame in frame_list:
        stream += p.encode(frame) + data.draw(garbage, label='infix')
    # Delivered in random chunks, like a serial port.
    decoder = p.FrameDecoder()
    decoded = []
    position = 0
    while position < len(stream):
        size = data.draw(st.integers(1, 64), label='chunk')
        decoded += decoder.feed(stream[position : position + size])
        position += size
    assert decoded == frame_list
    assert decoder.frames == len(frame_list)


def test_a_frame_cut_short_costs_only_itself() -> None:
    first = p.encode_heartbeat(1, 1.0)
    second = p.encode_reset(2)
    third = p.encode_heartbeat(3, 3.0)
    decoded, decoder = _decode_all(first + second[:-4] + third)
    assert decoded == [p.Heartbeat(1, 1.0), p.Heartbeat(3, 3.0)]
    assert decoder.crc_errors >= 1


def test_absurd_length_is_rejected_at_the_header_without_waiting() -> None:
    header = p.SYNC + struct.pack('<BBH', p.STATE, 0, 60000)
    bogus = header + bytes((p.crc8(header),))
    good = p.encode_reset(9)
    decoded, decoder = _decode_all(bogus + good)
    assert decoded == [p.Reset(9)]
    assert decoder.length_errors == 1


def test_checked_frame_with_a_bad_payload_is_rejected_with_a_reason() -> None:
    decoded, decoder = _decode_all(p.encode_frame(p.COMMAND, 4, b'\x03\x00\x07'))
    assert decoded == []
    assert decoder.malformed == 1
    rejected = decoder.rejected[-1]
    assert (rejected.frame_type, rejected.seq, rejected.code) == (p.COMMAND, 4, p.NACK_MALFORMED)
    assert 'COMMAND payload is 3 bytes, expected 9' in rejected.reason
    decoded, decoder = _decode_all(p.encode_frame(0x42, 5, b''))
    assert decoded == [] and decoder.rejected[-1].code == p.NACK_UNKNOWN_TYPE
    assert 'unknown frame type 0x42' in decoder.rejected[-1].reason


@pytest.mark.parametrize(
    ('call', 'message'),
    [
        (lambda: p.encode_command(0, [0.01, math.nan], [1, 1]), r'position_m\[1\] is nan'),
        (lambda: p.encode_command(0, [math.inf], [1]), r'position_m\[0\] is inf'),
        (lambda: p.encode_command(0, [-0.001], [1]), r'position_m\[0\] = -0.001 is outside'),
        (lambda: p.encode_command(0, [0.0, 0.07], [1, 1]), r'position_m\[1\] = 0.07 is outside'),
        (lambda: p.encode_command(0, [0.0] * 65, [1] * 65), 'position_m has 65 fingers'),
        (lambda: p.encode_command(0, [0.0] * 3, [1] * 2), 'enable has 2 entries, expected 3'),
        (lambda: p.encode_command(0, [], []), 'position_m is empty'),
        (lambda: p.encode_command(256, [0.0], [1]), r'seq must be in \[0, 255\]'),
        (lambda: p.encode_command(0, ['a'], [1]), r'position_m\[0\] must be a number'),
        (lambda: p.encode_hello(1, 1.5), 'version must be an integer'),
        (lambda: p.encode_reset(1, -1), 'clear_mask must be in'),
        (
            lambda: p.encode_state(
                0,
                board_time_s=0.0,
                ack_seq=0,
                flags=0,
                board_faults=0,
                position_m=[0.0, 0.0],
                velocity_m_s=[0.0, 0.0],
                load_n=[1.0, math.nan],
                finger_faults=[0, 0],
            ),
            r'load_n\[1\] is nan',
        ),
        (
            lambda: p.encode_state(
                0,
                board_time_s=-1.0,
                ack_seq=0,
                flags=0,
                board_faults=0,
                position_m=[0.0],
                velocity_m_s=[0.0],
                load_n=[0.0],
                finger_faults=[0],
            ),
            'board_time_s = -1.0 is outside',
        ),
        (
            lambda: p.encode_fault(
                0,
                board_time_s=0.0,
                fault_bits=2,
                board_faults=2,
                finger=None,
                value=math.nan,
                message='x',
            ),
            'value is nan',
        ),
        (
            lambda: p.encode_nack(0, rejected_type=1, rejected_seq=0, reason=1, message='x' * 200),
            'message is 200 bytes',
        ),
    ],
)
def test_bad_values_are_refused_naming_the_field(call, message) -> None:
    with pytest.raises(p.ProtocolError, match=message):
        call()


@settings(max_examples=LONG or 300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_feeding_random_bytes_never_raises(chunks) -> None:
    decoder = p.FrameDecoder()
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            assert p.encode(frame)  # anything that comes out re-encodes
    assert decoder.garbage_bytes <= sum(map(len, chunks))


@settings(max_examples=LONG or 200, deadline=None)
@given(st.binary(min_size=1, max_size=40), seqs, st.sampled_from(sorted(p._KNOWN_TYPES)))
def test_checked_frames_with_random_payloads_never_raise(payload, seq, frame_type) -> None:
    decoded, decoder = _decode_all(p.encode_frame(frame_type, seq, payload))
    assert len(decoded) + decoder.malformed == 1


def test_fault_names() -> None:
    assert p.fault_names(0) == 'none'
    assert p.fault_names(p.FAULT_OVERLOAD | p.FAULT_ESTOP) == 'OVERLOAD|ESTOP'
    assert p.fault_names(0x300) == '0x300'
