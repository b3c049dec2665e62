"""Session recorder: the topics of a treatment session into one MCAP file, crash-safe.

The file uses the ROS 2 MCAP profile (CDR messages, ``ros2msg`` schemas with the dependencies
concatenated the rosbag2 way), so Foxglove, ``ros2 bag`` (MCAP storage) and
``mcap_ros2.decoder`` all read it. Messages are taken serialized from rclpy (``raw=True``) and
written as they came off the wire: nothing is re-serialised.

Crash safety: the writer closes its chunk and flushes the file every ``flush_period_s`` of wall
time (a thread, so a stalled simulated clock cannot delay it). A SIGKILL or power cut loses at
most that window; :func:`read_session` reads such a file (no footer, maybe half a record at the
end) sequentially and stops cleanly at the truncation::

    recorder = SessionRecorder(node, 'session.mcap')   # subscribes to DEFAULT_TOPICS
    recorder.add_metadata('session', {'program': 'full_back', 'intensity': '0.6'})
    recorder.record(PROGRAM_RESULT_TOPIC, result_msg)  # anything the owner wants logged
    ...
    recorder.close()
    session = read_session('session.mcap')             # .messages, .metadata, .truncated
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import re
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mcap.exceptions import McapError
from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

SCHEMA_ENCODING = 'ros2msg'
MESSAGE_ENCODING = 'cdr'
PROGRAM_FEEDBACK_TOPIC = '/run_program/_action/feedback'
#: Not published by anyone: the program's owner (``backhug run``) logs the action result here.
PROGRAM_RESULT_TOPIC = '/run_program/result'
PROGRAM_FEEDBACK_TYPE = 'backhug_interfaces/action/RunProgram_FeedbackMessage'
PROGRAM_RESULT_TYPE = 'backhug_interfaces/action/RunProgram_Result'

#: topic -> (type, QoS name in backhug_hw_interface.qos). The action feedback topic is the
#: RunProgram server's own, so feedback is recorded whoever sent the goal.
DEFAULT_TOPICS: dict[str, tuple[str, str]] = {
    '/joint_states': ('sensor_msgs/msg/JointState', 'STATE_QOS'),
    '/finger_setpoints': ('backhug_interfaces/msg/FingerSetpoints', 'STATE_QOS'),
    '/finger_commands': ('backhug_interfaces/msg/FingerCommands', 'STATE_QOS'),
    '/safety/status': ('backhug_interfaces/msg/SafetyStatus', 'LATCHED_QOS'),
    '/hardware/status': ('backhug_interfaces/msg/HardwareStatus', 'STATE_QOS'),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', 'STATE_QOS'),
    '/heartbeat': ('backhug_interfaces/msg/Heartbeat', 'HEARTBEAT_QOS'),
    '/robot_description': ('std_msgs/msg/String', 'LATCHED_QOS'),
    PROGRAM_FEEDBACK_TOPIC: (PROGRAM_FEEDBACK_TYPE, 'STATE_QOS'),
}

_PRIMITIVES = {
    'bool',
    'byte',
    'char',
    'float32',
    'float64',
    'int8',
    'uint8',
    'int16',
    'uint16',
    'int32',
    'uint32',
    'int64',
    'uint64',
    'string',
    'wstring',
}
_DELIMITER = '=' * 80
_ACTION_PARTS = ('Goal', 'Result', 'Feedback')


class RecorderError(RuntimeError):
    """The recorder cannot record (unknown type, no definition, file not writable)."""


# --- message definitions --------------------------------------------------------------------


def type_name_of(message_or_class: Any) -> str:
    """'sensor_msgs/msg/JointState' for a rclpy message instance or class."""
    cls = message_or_class if isinstance(message_or_class, type) else type(message_or_class)
    parts = cls.__module__.split('.')
    if len(parts) < 2 or parts[1] not in ('msg', 'srv', 'action'):
        raise RecorderError(f'{cls!r} is not a generated ROS 2 interface class')
    return f'{parts[0]}/{parts[1]}/{cls.__name__}'


def message_class(type_name: str) -> type:
    """The rclpy class of 'pkg/msg/Type' (or 'pkg/action/Name_Feedback' ...)."""
    try:
        package, kind, name = type_name.split('/')
        module = importlib.import_module(f'{package}.{kind}')
        if kind == 'action' and '_' in name:
            action, part = name.split('_', 1)
            action_class = getattr(module, action)
            if part in _ACTION_PARTS:
                return getattr(action_class, part)
            return getattr(action_class.Impl, part)  # FeedbackMessage, SendGoalService, ...
        return getattr(module, name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise RecorderError(
            f'message type {type_name!r} is not importable (expected pkg/msg/Type of a built '
            'interface package)'
        ) from exc


def _share(package: str) -> Path:
    from ament_index_python.packages import get_package_share_directory

    try:
        return Path(get_package_share_directory(package))
    except (LookupError, ValueError) as exc:
        raise RecorderError(f'no share directory for interface package {package!r}') from exc


def _own_definition(type_name: str) -> str:
    """The .msg text of one type (action parts cut from the .action file)."""
    package, kind, name = type_name.split('/')
    if kind == 'msg':
        path = _share(package) / 'msg' / f'{name}.msg'
        if not path.is_file():
            raise RecorderError(f'{type_name}: no message definition at {path}')
        return path.read_text(encoding='utf-8')
    if kind == 'action':
        action, _, part = name.rpartition('_')
        if part == 'FeedbackMessage':
            return f'unique_identifier_msgs/UUID goal_id\n{package}/{action}_Feedback feedback\n'
        path = _share(package) / 'action' / f'{action}.action'
        if part not in _ACTION_PARTS or not path.is_file():
            raise RecorderError(f'{type_name}: no action definition at {path}')
        sections = re.split(r'^---\s*$', path.read_text(encoding='utf-8'), flags=re.MULTILINE)
        return sections[_ACTION_PARTS.index(part)].strip('\n') + '\n'
    raise RecorderError(f'{type_name}: only msg and action types are recorded')


def _dependencies(type_name: str, text: str) -> list[str]:
    """Full names of the non-primitive field types in one definition, in order."""
    package, kind, _ = type_name.split('/')
    found = []
    for raw_line in text.splitlines():
        line = raw_line.split('#', 1)[0].strip()
        if not line:
            continue
        field_type = line.split()[0]
        if '=' in line.split(None, 1)[-1] and field_type in _PRIMITIVES:
            continue  # a constant
        base = re.sub(r'\[.*\]$', '', field_type)
        base = re.sub(r'<=\d+$', '', base)
        if base in _PRIMITIVES:
            continue
        if base == 'Header':
            full = 'std_msgs/msg/Header'
        elif base.count('/') == 2:
            full = base
        elif '/' in base:
            dep_package, dep_name = base.split('/')
            dep_kind = 'action' if dep_package == package and kind == 'action' else 'msg'
            if dep_kind == 'action' and not dep_name.endswith(
                tuple(f'_{p}' for p in _ACTION_PARTS)
            ):
                dep_kind = 'msg'
            full = f'{dep_package}/{dep_kind}/{dep_name}'
        else:
            full = f'{package}/msg/{base}'
        if full not in found:
            found.append(full)
    return found


def message_definition(type_name: str) -> str:
    """The complete ``ros2msg`` definition of a type: its own text, then every dependency.

    Dependencies follow, depth first, each after an 80-character ``=`` line and a
    ``MSG: pkg/msg/Type`` line (rosbag2's docs/message_definition_encoding.md).
    """
    parts = [_own_definition(type_name).rstrip('\n')]
    seen = {type_name}
    stack = list(reversed(_dependencies(type_name, parts[0])))
    while stack:
        dependency = stack.pop()
        if dependency in seen:
            continue
        seen.add(dependency)
        text = _own_definition(dependency).rstrip('\n')
        parts.append(f'{_DELIMITER}\nMSG: {dependency}\n{text}')
        stack.extend(reversed(_dependencies(dependency, text)))
    return '\n'.join(parts) + '\n'


# --- recording ------------------------------------------------------------------------------


class SessionRecorder:
    """Record ROS 2 topics of one session into an MCAP file (see the module docstring).

    ``topics`` maps topic -> (type, QoS name in backhug_hw_interface.qos) or topic -> type (then
    STATE_QOS); ``max_rate_hz`` optionally thins busy topics (topic -> Hz), everything else is kept.
    """

    def __init__(
        self,
        node: Any,
        path: str | Path,
        topics: dict[str, tuple[str, str] | str] | None = None,
        *,
        max_rate_hz: dict[str, float] | None = None,
        flush_period_s: float = 0.25,
        chunk_size: int = 256 * 1024,
    ) -> None:
        from backhug_hw_interface import qos

        self._node = node
        self.path = Path(path)
        self._lock = threading.Lock()
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._topic_types: dict[str, str] = {}
        self._sequence = 0
        self._counts: dict[str, int] = {}
        self._min_period_ns = {t: int(1e9 / hz) for t, hz in (max_rate_hz or {}).items() if hz > 0}
        self._last_ns: dict[str, int] = {}
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, 'wb')  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise RecorderError(f'cannot write the session recording {self.path}: {exc}') from exc
        self._writer = McapWriter(
            self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD
        )
        self._writer.start(profile='ros2', library='backhug_bringup.recorder')
        self._subscriptions = []
        topics = DEFAULT_TOPICS if topics is None else topics
        # Under the lock: a subscription made here can deliver on the node's executor thread
        # before the next topic is registered, and the MCAP writer is not thread-safe (a fault
        # campaign recording read back 'schema 3 unknown': a channel written without its schema).
        with self._lock:
            for topic, spec in topics.items():
                type_name, qos_name = (spec, 'STATE_QOS') if isinstance(spec, str) else spec
                self._register(topic, type_name)
                profile = getattr(qos, qos_name, None)
                if profile is None:
                    raise RecorderError(f'topic {topic}: unknown QoS {qos_name!r} (see qos.py)')
                self._subscriptions.append(
                    node.create_subscription(
                        message_class(type_name),
                        topic,
                        lambda data, topic=topic: self._on_raw(topic, data),
                        profile,
                        raw=True,
                    )
                )
            self._writer.flush()
        self._flush_period_s = flush_period_s
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name='mcap-flush')
        self._flusher.start()

    # The channel for a topic exists before its first message, so an empty topic is still
    # visible in the file (and a reader knows what was expected).
    def _register(self, topic: str, type_name: str) -> int:
        if topic in self._channels:
            if self._topic_types[topic] != type_name:
                raise RecorderError(
                    f'topic {topic} is recorded as {self._topic_types[topic]}, not {type_name}'
                )
            return self._channels[topic]
        if type_name not in self._schemas:
            definition = message_definition(type_name)
            self._schemas[type_name] = self._writer.register_schema(
                type_name, SCHEMA_ENCODING, definition.encode()
            )
        channel = self._writer.register_channel(topic, MESSAGE_ENCODING, self._schemas[type_name])
        self._channels[topic] = channel
        self._topic_types[topic] = type_name
        self._counts[topic] = 0
        return channel

    def _now_ns(self) -> int:
        return self._node.get_clock().now().nanoseconds

    def _on_raw(self, topic: str, data: bytes) -> None:
        self._write(topic, data, self._now_ns())

    def _write(self, topic: str, data: bytes, stamp_ns: int) -> None:
        with self._lock:
            if self._closed:
                return
            period = self._min_period_ns.get(topic)
            if period is not None:
                last = self._last_ns.get(topic)
                if last is not None and 0 <= stamp_ns - last < period:
                    return
                self._last_ns[topic] = stamp_ns
            self._sequence += 1
            self._writer.add_message(
                channel_id=self._channels[topic],
                log_time=stamp_ns,
                publish_time=stamp_ns,
                sequence=self._sequence & 0xFFFFFFFF,
                data=data,
            )
            self._counts[topic] += 1

    def record(self, topic: str, message: Any, stamp_ns: int | None = None) -> None:
        """Record one message the caller holds (e.g. action feedback or the program's result).

        The topic is registered on first use with the message's type; ``stamp_ns`` defaults to
        the node's clock now.
        """
        from rclpy.serialization import serialize_message

        type_name = type_name_of(message)
        with self._lock:
            if self._closed:
                raise RecorderError(f'{self.path}: recorder is closed')
            self._register(topic, type_name)
        self._write(
            topic, serialize_message(message), self._now_ns() if stamp_ns is None else stamp_ns
        )

    def add_metadata(self, name: str, data: dict[str, Any]) -> None:
        """Write a metadata record (values become strings), flushed at once."""
        with self._lock:
            if self._closed:
                raise RecorderError(f'{self.path}: recorder is closed')
            self._writer.add_metadata(name, {str(k): str(v) for k, v in data.items()})
            self._writer.flush()

    @property
    def counts(self) -> dict[str, int]:
        """Messages written so far per topic."""
        with self._lock:
            return dict(self._counts)

    def flush(self) -> None:
        """Close the current chunk and push everything to the file."""
        with self._lock:
            if not self._closed:
                self._writer.flush()

    def _flush_loop(self) -> None:
        last_sync = time.monotonic()
        while not self._stop.wait(self._flush_period_s):
            with self._lock:
                if self._closed:
                    return
                self._writer.flush()
                # Flushing reaches the kernel (enough for a crash); fsync now and then for
                # a power cut.
                if time.monotonic() - last_sync > 2.0:
                    os.fsync(self._file.fileno())
                    last_sync = time.monotonic()

    def close(self) -> None:
        """Stop recording, write the summary and footer, close the file. Idempotent."""
        self._stop.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=2)
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading --------------------------------------------------------------------------------


@dataclasses.dataclass
class RecordedMessage:
    """One decoded message of a session."""

    topic: str
    type_name: str
    log_time_ns: int
    message: Any  # decoded by mcap_ros2 (attribute access like the rclpy message)


@dataclasses.dataclass
class Session:
    """Everything :func:`read_session` found in a recording."""

    path: Path
    messages: list[RecordedMessage]
    metadata: dict[str, dict[str, str]]
    topics: dict[str, str]  # topic -> type, including topics that got no message
    truncated: bool  # no footer: the recorder did not close (crash, kill, power cut)
    error: str = ''  # what stopped the reading early, if anything

    def on(self, topic: str) -> list[RecordedMessage]:
        """The messages of one topic, in recording order."""
        return [m for m in self.messages if m.topic == topic]

    def counts(self) -> dict[str, int]:
        """Number of messages per topic (0 for channels without messages)."""
        counts = dict.fromkeys(self.topics, 0)
        for message in self.messages:
            counts[message.topic] = counts.get(message.topic, 0) + 1
        return counts


def _records(stream: io.BufferedIOBase, state: dict) -> Iterator[Any]:
    reader = StreamReader(stream, validate_crcs=True)
    try:
        yield from reader.records
        state['complete'] = True
    except (McapError, EOFError, struct.error, ValueError, OSError) as exc:
        # mcap raises EndOfFile (an McapError) or a short read surfaces as struct.error/zstd
        # ValueError: either way the rest of the file is unreadable, stop here.
        state['error'] = f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__
    except Exception as exc:  # a corrupt compressed chunk raises the compressor's own errors
        state['error'] = f'{type(exc).__name__}: {exc}'


_ACTION_TYPE_NAME = re.compile(r'\b([A-Z][A-Za-z0-9]*)_(Goal|Result|Feedback|FeedbackMessage)\b')


def decodable_schema(schema: Schema) -> Schema:
    """The schema as mcap-ros2-support 0.6 can parse it.

    rosidl names the action parts ``RunProgram_Feedback`` and ``RunProgram_FeedbackMessage``;
    mcap_ros2's vendored parser accepts only ``[A-Z][A-Za-z0-9]*``. The layout does not depend on
    the name, so join the parts (``RunProgramFeedback``) for decoding. The file itself keeps the
    real ROS names (what ``ros2 bag`` and Foxglove expect).
    """
    if not _ACTION_TYPE_NAME.search(schema.name):
        return schema
    return Schema(
        id=schema.id,
        name=_ACTION_TYPE_NAME.sub(r'\1\2', schema.name),
        encoding=schema.encoding,
        data=_ACTION_TYPE_NAME.sub(r'\1\2', schema.data.decode()).encode(),
    )


def read_session(
    path: str | Path,
    topics: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
) -> Session:
    """Read a session recording, complete or truncated, and decode its messages.

    Reads sequentially (no index needed) and stops at the first record it cannot read; what came
    before is returned and ``truncated``/``error`` say why it stopped. When ``topics`` or
    ``types`` (e.g. 'backhug_interfaces/action/RunProgram_Feedback') are given, only messages on
    one of those topics or of one of those types are decoded.
    """
    from mcap_ros2.decoder import DecoderFactory

    path = Path(path)
    selective = topics is not None or types is not None
    wanted_topics = set(topics or ())
    wanted_types = set(types or ())
    factory = DecoderFactory()
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    decoders: dict[int, Any] = {}
    messages: list[RecordedMessage] = []
    metadata: dict[str, dict[str, str]] = {}
    state: dict[str, Any] = {'complete': False, 'error': ''}
    try:
        handle = open(path, 'rb')  # noqa: SIM115 - closed below
    except OSError as exc:
        raise RecorderError(f'cannot read session recording {path}: {exc}') from exc
    with handle:
        for record in _records(handle, state):
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Metadata):
                metadata[record.name] = dict(record.metadata)
            elif isinstance(record, Message):
                channel = channels.get(record.channel_id)
                if channel is None:
                    continue
                schema = schemas[channel.schema_id]
                if (
                    selective
                    and channel.topic not in wanted_topics
                    and schema.name not in wanted_types
                ):
                    continue
                decoder = decoders.get(channel.id)
                if decoder is None:
                    decoder = factory.decoder_for(
                        channel.message_encoding, decodable_schema(schema)
                    )
                    decoders[channel.id] = decoder
                messages.append(
                    RecordedMessage(
                        channel.topic, schema.name, record.log_time, decoder(record.data)
                    )
                )
    return Session(
        path=path,
        messages=messages,
        metadata=metadata,
        topics={c.topic: schemas[c.schema_id].name for c in channels.values()},
        truncated=not state['complete'],
        error=state['error'],
    )
