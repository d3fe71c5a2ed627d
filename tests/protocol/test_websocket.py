"""multichat/1 in WebSocket messages, as bytes: a client's frames in, lines out; frames back."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from multichat.protocol import wire
from multichat.protocol.errors import RemoteProtocolError
from multichat.protocol.events import CONNECTION_CLOSED, NEED_DATA, Message, Say
from multichat.protocol.websocket import WebSocketConnection, frame


def client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def lines_of(
    server: WebSocketConnection, data: bytes, cuts: list[int] | None = None
) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in (cuts or [])} | {0, len(data)})
    lines = []
    for a, b in itertools.pairwise(points):
        server.receive_data(data[a:b])
        while isinstance(line := server.next_line(), bytes):
            lines.append(line)
    return lines


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 65_535, 65_536, 70_000])
def test_a_server_frame_is_what_a_client_reads_as_the_line(size: int) -> None:
    line = b"x" * size + b"\n"
    reader = client()
    reader.receive_data(frame(line))
    (event,) = list(reader.events())
    assert isinstance(event, TextMessage) and event.message_finished
    assert event.data.encode() == line[:-1]


def test_frames_of_room_entries_are_the_wire_frames_without_the_newline() -> None:
    data = wire.encode(Message(3, 1.5, "alice", "hi", 7))
    reader = client()
    reader.receive_data(frame(data))
    (event,) = list(reader.events())
    assert isinstance(event, TextMessage)
    assert wire.decode(event.data.encode()) == Message(3, 1.5, "alice", "hi", 7)


SAYS = [wire.encode(Say(f"line {i}", str(i)))[:-1].decode() for i in range(5)]


@settings(max_examples=200)
@given(st.lists(st.integers(0, 10_000), max_size=10))
def test_any_chunking_gives_the_same_lines(cuts: list[int]) -> None:
    sender = client()
    data = b"".join(sender.send(TextMessage(s)) for s in SAYS)
    lines = lines_of(WebSocketConnection(), data, cuts)
    assert lines == [s.encode() + b"\n" for s in SAYS]


def test_a_fragmented_message_is_one_line_and_newlines_inside_do_not_split_it() -> None:
    sender = client()
    data = sender.send(TextMessage('{"type":"say",\n', message_finished=False))
    data += sender.send(TextMessage('"text":"a\\nb"}', message_finished=True))
    lines = lines_of(WebSocketConnection(), data)
    assert lines == [b'{"type":"say", "text":"a\\nb"}\n']
    assert wire.decode(lines[0][:-1]) == Say("a\nb")


def test_frames_sent_with_the_upgrade_are_read_first() -> None:
    sender = client()
    server = WebSocketConnection(sender.send(TextMessage(SAYS[0])))
    assert server.next_line() == SAYS[0].encode() + b"\n"
    assert server.next_line() is NEED_DATA


def test_a_ping_is_answered_and_a_close_is_returned() -> None:
    sender = client()
    server = WebSocketConnection()
    server.receive_data(sender.send(Ping(b"x")) + sender.send(CloseConnection(1000)))
    assert server.next_line() is CONNECTION_CLOSED
    reader = client()
    reader.receive_data(server.data_to_send())
    events = list(reader.events())
    assert isinstance(events[0], Pong) and events[0].payload == b"x"
    assert isinstance(events[1], CloseConnection) and events[1].code == 1000
    assert server.close() == b"", "a close was already answered"


@pytest.mark.parametrize(
    ("data", "code", "close"),
    [
        (client().send(BytesMessage(b"\x00")), "bad_frame", 1003),
        (client().send(TextMessage("x" * 20_000)), "frame_too_long", 1009),
        (b"\x81\x05hello", "bad_frame", 1002),  # not masked: clients must mask
        (b"\x83\x80\x00\x00\x00\x00", "bad_frame", 1002),  # a reserved opcode
    ],
)
def test_bad_frames_raise_and_close_with_the_right_code(data: bytes, code: str, close: int) -> None:
    server = WebSocketConnection()
    server.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_line()
    assert info.value.code == code
    reader = client()
    reader.receive_data(server.close())
    (event,) = list(reader.events())
    assert isinstance(event, CloseConnection) and event.code == close


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_raises_only_remote_protocol_error(data: bytes) -> None:
    server = WebSocketConnection()
    server.receive_data(data)
    try:
        for _ in range(50):
            if not isinstance(server.next_line(), bytes):
                break
    except RemoteProtocolError:
        pass
    server.data_to_send()
    server.close()


@settings(max_examples=100)
@given(st.lists(st.integers(0, 10_000), max_size=10), st.integers(0, 4))
def test_a_control_frame_midway_hands_over_to_wsproto_and_nothing_is_lost(
    cuts: list[int], at: int
) -> None:
    """Text frames are read the short way until the first other frame; wsproto reads on."""
    sender = client()
    frames = [sender.send(TextMessage(s)) for s in SAYS]
    frames.insert(at, sender.send(Ping(b"x")))
    server = WebSocketConnection()
    lines = lines_of(server, b"".join(frames), cuts)
    assert lines == [s.encode() + b"\n" for s in SAYS]
    reader = client()
    reader.receive_data(server.data_to_send())
    assert [type(e) for e in reader.events()] == [Pong]


@pytest.mark.parametrize("size", [0, 125, 126, 65_535])
def test_the_short_way_reads_every_length_a_client_sends(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    server = WebSocketConnection(max_message=70_000)
    server.receive_data(client().send(TextMessage(text)))
    assert server.next_line() == text.encode() + b"\n"


def test_a_server_that_read_only_text_frames_closes_normally() -> None:
    # wsproto's connection is made only at the close: it must start open, at a frame's edge.
    sender = client()
    server = WebSocketConnection()
    server.receive_data(b"".join(sender.send(TextMessage(s)) for s in SAYS))
    assert [server.next_line() for _ in SAYS] == [s.encode() + b"\n" for s in SAYS]
    assert server.data_to_send() == b""
    sender.receive_data(server.close())
    (event,) = list(sender.events())
    assert isinstance(event, CloseConnection) and event.code == 1000


def test_bad_utf8_the_short_way_is_closed_with_1007() -> None:
    mask = b"\x00\x00\x00\x00"
    server = WebSocketConnection()
    server.receive_data(b"\x81\x82" + mask + b"\xff\xfe")
    with pytest.raises(RemoteProtocolError):
        server.next_line()
    reader = client()
    reader.receive_data(server.close())
    (event,) = list(reader.events())
    assert isinstance(event, CloseConnection) and event.code == 1007
