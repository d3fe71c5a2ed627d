"""Fuzzing the two parsers a stranger reaches first: JSON frames and plain-text lines.

Whatever the bytes and however they are cut, only the protocol's own error may come out
(RemoteProtocolError), and our answers are always legal in the state the input left. Each
property runs a few hundred examples by default and 10,000 with `-m slow`. (The PROXY parser,
the sanitiser and the name rules have theirs in test_proxy.py, test_sanitize.py and
test_names.py.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import client_events, joined_server, server_events

from multichat.protocol import textmode, wire, wire_fields
from multichat.protocol.commands import CommandError
from multichat.protocol.connection import ClientConnection, ServerConnection
from multichat.protocol.errors import RemoteProtocolError
from multichat.protocol.events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    AskName,
    Away,
    Back,
    Control,
    Error,
    Event,
    Hello,
    Help,
    JoinRoom,
    ListRooms,
    Moderate,
    Nick,
    Password,
    Ping,
    Pong,
    Quit,
    Say,
    SetTopic,
    Welcome,
    Who,
)
from multichat.protocol.state import Mode, State

FAST = settings(max_examples=200, deadline=None)
LONG = settings(max_examples=10_000, deadline=None)

# -- JSON frames --

FRAME_TYPES = sorted(wire_fields.DECODERS)
FIELDS = ["name", "password", "version", "token", "command", "reason", "text", "id", "data"]
FIELDS += ["room", "members", "code", "message", "seq", "ts", "from", "names", "uptime"]
FIELDS += ["to", "action", "old", "new", "by", "target", "seconds", "args", "away", "ops"]
FIELDS += ["topic", "bans", "until", "address", "rooms", "invite", "since"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@st.composite
def frame_objects(draw: st.DrawFn) -> bytes:
    """A JSON object that looks like a frame: a known type, known keys, any values."""
    obj: dict[str, object] = {"type": draw(st.sampled_from(FRAME_TYPES) | st.text(max_size=8))}
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=6)):
        obj[key] = draw(JSON_VALUES)
    if draw(st.booleans()):
        del obj["type"]
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def mangled_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with a few bytes overwritten, cut short, or repeated."""
    frame = bytearray(wire.encode(draw(client_events | server_events))[:-1])
    for _ in range(draw(st.integers(1, 3))):
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    return bytes(frame[: draw(st.integers(0, len(frame)))])


VALID_FRAMES = st.one_of(
    client_events,
    server_events,
    st.builds(Hello, st.text(max_size=10), st.text(max_size=10)),
    st.builds(Control, st.text(max_size=10), st.sampled_from(["status", "shutdown", "x"])),
).map(lambda event: wire.encode(event)[:-1])
LINES = st.one_of(
    VALID_FRAMES,
    frame_objects(),
    mangled_frames(),
    st.binary(max_size=200),
    st.integers(1, 100_000).map(lambda depth: b"[" * depth),  # nesting a parser recurses on
    st.integers(1, 5000).map(lambda digits: b'{"type":"ping","data":' + b"9" * digits + b"}"),
).filter(lambda line: b"\n" not in line)


def _decode_property(line: bytes) -> None:
    try:
        event = wire.decode(line)
    except RemoteProtocolError:
        return
    # Whatever decodes, encodes again, and comes back the same (NaN aside, which is unequal).
    again = wire.decode(wire.encode(event)[:-1])
    if not any(isinstance(v, float) and math.isnan(v) for v in _fields(event)):
        assert again == event


def _fields(event: Event) -> list[object]:
    return [getattr(event, slot) for slot in type(event).__slots__]


@FAST
@given(LINES)
def test_frame_decoder_raises_only_remote_protocol_error(line: bytes) -> None:
    _decode_property(line)


@pytest.mark.slow
@LONG
@given(LINES)
def test_frame_decoder_raises_only_remote_protocol_error_long(line: bytes) -> None:
    _decode_property(line)


STREAMS = st.tuples(
    st.lists(LINES, max_size=6),
    st.lists(st.integers(0, 100_000), max_size=8),
    st.booleans(),  # joined already, or still greeting
    st.booleans(),  # the server welcomes a hello, or refuses it
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def _events_now(conn: ServerConnection) -> Iterator[Event]:
    """The events `conn` can give now, skipping bad frames it survives; ends at NEED_DATA or
    at the close (after which it must keep answering CONNECTION_CLOSED)."""
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError:
            if conn.state is State.CLOSED:
                assert conn.next_event() is CONNECTION_CLOSED
                return
            continue
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return
        yield event


def _server_stream_property(case: tuple[list[bytes], list[int], bool, bool]) -> None:
    """A JSON connection, greeting or joined, fed frames and garbage in random pieces."""
    lines, cuts, joined, welcome = case
    conn = joined_server() if joined else ServerConnection()
    data = b"\n".join(lines) + b"\n"
    if not data.startswith(b"{"):
        data = b"{" + data  # a JSON connection: the text-mode fuzz covers the other kind
    for chunk in [*_chunks(data, cuts), b""]:
        conn.receive_data(chunk)
        for event in _events_now(conn):
            assert conn.mode is Mode.JSON
            members_ask = Say | Who | Ping | Pong | Quit | Nick | Away | Back | SetTopic | Help
            rooms_ask = ListRooms | JoinRoom
            assert isinstance(event, Hello | Control | members_ask | Moderate | rooms_ask), event
            if conn.state is State.ANSWERING:  # a greeting: answer it as the server would
                if isinstance(event, Hello) and welcome:
                    conn.send(Welcome(event.name, "room", (event.name,)))
                else:
                    conn.send(Error("bad_password", "no"))
            elif isinstance(event, Ping):
                conn.send(Pong(event.data))


def _client_stream_property(case: tuple[list[bytes], list[int], bool, bool]) -> None:
    lines, cuts, joined, _ = case
    conn = ClientConnection()
    conn.send(Hello("alice", "pw"))
    if joined:
        conn.receive_data(wire.encode(Welcome("alice", "room", ("alice",))))
        assert isinstance(conn.next_event(), Welcome)
    for chunk in [*_chunks(b"\n".join(lines) + b"\n", cuts), b""]:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                if conn.state is State.CLOSED:
                    return
                continue
            if event is NEED_DATA or event is CONNECTION_CLOSED:
                break


@FAST
@given(STREAMS)
def test_frame_streams_raise_only_remote_protocol_error(
    case: tuple[list[bytes], list[int], bool, bool],
) -> None:
    _server_stream_property(case)
    _client_stream_property(case)


@pytest.mark.slow
@LONG
@given(STREAMS)
def test_frame_streams_raise_only_remote_protocol_error_long(
    case: tuple[list[bytes], list[int], bool, bool],
) -> None:
    _server_stream_property(case)
    _client_stream_property(case)


# -- plain-text mode --

PAUSE = "pause"
TEXT_BYTES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"tata\n", b"/quit\n", b"/who\n", b"  \n", b"{"]),
    st.just(b"x" * 20_000),  # past the line limit
)
TEXT_INPUT = st.lists(TEXT_BYTES | st.just(PAUSE), max_size=12)
STAGES = st.sampled_from(["fresh", "paused", "named", "joined"])


def _text_conn(stage: str) -> ServerConnection:
    conn = ServerConnection()
    if stage == "fresh":
        return conn
    conn.receive_pause()  # a person waiting: the password prompt
    assert conn.data_to_send() == textmode.PASSWORD_PROMPT
    if stage == "paused":
        return conn
    conn.receive_data(b"pw\n")
    assert conn.next_event() == Password("pw")
    assert conn.send(AskName()) == textmode.NAME_PROMPT
    if stage == "named":
        return conn
    conn.receive_data(b"alice\n")
    assert conn.next_event() == Hello("alice", "pw")
    conn.send(Welcome("alice", "room", ("alice",)))
    return conn


def _text_property(stage: str, steps: list[bytes | str], refuse_names: bool) -> None:
    """Drive a plain-text connection as the session does; check every event and answer."""
    conn = _text_conn(stage)
    for step in [*steps, b""]:
        if step == PAUSE:
            conn.receive_pause()
        else:
            assert isinstance(step, bytes)
            conn.receive_data(step)
        for event in _events_now(conn):
            if conn.mode is Mode.JSON:
                continue  # a first "{" makes a JSON connection; the frame fuzz covers it
            assert isinstance(event, Password | Hello | Quit | Say | Who), event
            if isinstance(event, Say):
                assert "\n" not in event.text and event.text.strip()
            # The session's answers must be legal in whatever state the input left.
            data = b""
            if isinstance(event, Password):
                data = conn.send(AskName())
            elif isinstance(event, Hello):
                answer = (
                    Error("name_taken", "taken") if refuse_names else Welcome(event.name, "r", ())
                )
                data = conn.send(answer)
            elif isinstance(event, Who):
                data = conn.send(Error("x", "y"))
            assert isinstance(data, bytes)
            if isinstance(event, Quit):
                # At a prompt, quitting ends it; a member leaves once its last frames are out.
                assert conn.state in (State.CLOSED, State.LEAVING)
                return


@FAST
@given(STAGES, TEXT_INPUT, st.booleans())
def test_text_mode_raises_only_remote_protocol_error(
    stage: str, steps: list[bytes | str], refuse_names: bool
) -> None:
    _text_property(stage, steps, refuse_names)


@pytest.mark.slow
@LONG
@given(STAGES, TEXT_INPUT, st.booleans())
def test_text_mode_raises_only_remote_protocol_error_long(
    stage: str, steps: list[bytes | str], refuse_names: bool
) -> None:
    _text_property(stage, steps, refuse_names)


def _text_chunking_property(lines: list[str], cuts: list[int]) -> None:
    """Without pauses, lines end only at newlines: any cutting gives the same events."""
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")

    def events(chunks: list[bytes]) -> list[object]:
        conn = _text_conn("joined")
        out: list[object] = []
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    out.append(exc.code)
                    continue
                if event is NEED_DATA or event is CONNECTION_CLOSED:
                    break
                out.append(event)
        return out

    whole = events([data])
    assert events(_chunks(data, cuts)) == whole
    assert events([data[i : i + 1] for i in range(len(data))]) == whole


TEXT_LINES = st.lists(st.text(st.characters(blacklist_characters="\n"), max_size=30), max_size=8)


@FAST
@given(TEXT_LINES, st.lists(st.integers(0, 10_000), max_size=10))
def test_text_mode_any_chunking_gives_the_same_events(lines: list[str], cuts: list[int]) -> None:
    _text_chunking_property(lines, cuts)


@pytest.mark.slow
@LONG
@given(TEXT_LINES, st.lists(st.integers(0, 10_000), max_size=10))
def test_text_mode_any_chunking_gives_the_same_events_long(
    lines: list[str], cuts: list[int]
) -> None:
    _text_chunking_property(lines, cuts)


@FAST
@given(st.text())
def test_parse_line_takes_any_text(line: str) -> None:
    """Any typed line is a member's request, nothing, or a command error (answered, not fatal)."""
    try:
        event = textmode.parse_line(line)
    except CommandError:
        assert line.strip().startswith("/")
        return
    members_ask = Say | Who | Quit | Nick | Away | Back | SetTopic | Help | Moderate
    assert event is None or isinstance(event, members_ask)
