"""multichat/1 as bytes: every event round-trips, any chunking gives the same events."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multichat.protocol import wire
from multichat.protocol.connection import ClientConnection, LineBuffer, ServerConnection
from multichat.protocol.errors import LocalProtocolError, RemoteProtocolError
from multichat.protocol.events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    AskName,
    Control,
    Error,
    Event,
    Hello,
    Join,
    JoinRoom,
    Leave,
    ListRooms,
    Members,
    Message,
    Password,
    Ping,
    Pong,
    Quit,
    RoomInfo,
    RoomList,
    Say,
    Shutdown,
    Status,
    Welcome,
    Who,
)
from multichat.protocol.state import Mode, State

text = st.text(max_size=50)
names = st.tuples(*[text] * 3).map(tuple) | st.just(())
client_events = st.one_of(
    st.builds(Say, text, st.none() | text | st.integers(-(2**53), 2**53)),
    st.just(Who()),
    st.builds(Ping, text),
    st.builds(Pong, text),
    st.just(ListRooms()),
    st.builds(JoinRoom, text),
)
rooms = st.lists(st.builds(RoomInfo, text, st.integers(0, 10_000), text, names), max_size=3).map(
    tuple
)
server_events = st.one_of(
    st.builds(
        Message,
        st.integers(0, 2**53),
        st.floats(0, 2e9),
        text,
        text,
        st.none() | text | st.integers(-(2**53), 2**53),
    ),
    st.builds(Join, text, st.floats(0, 2e9)),
    st.builds(Leave, text, text, st.floats(0, 2e9)),
    st.builds(Members, names),
    st.builds(Error, text, text),
    st.builds(Ping, text),
    st.builds(Pong, text),
    st.builds(RoomList, rooms),
    st.builds(Welcome, text, text, names, st.just(1), text, st.integers(0, 2**53)),
)
ALL_EVENTS: list[Event] = [
    Hello("alice", "pw"),
    Control("tok", "status", "why"),
    Say("hi", "1"),
    Say("hi", 1),
    Say("hi"),
    Who(),
    Quit("bye"),
    Ping("x"),
    Pong("x"),
    Welcome("alice", "room", ("alice", "bob")),
    Error("bad_frame", "oops"),
    Error("unavailable", "later", "a-7"),
    Error("muted", "hush", 12),
    Message(1, 1.5, "alice", "hi\nthere", "7"),
    Message(2, 1.5, "bob", "hi"),
    Join("bob", 2.0),
    Leave("bob", "quit", 3.0),
    Members(("a", "b")),
    Status("room", ("a",), 12.5, "0.1.0"),
    Shutdown("bye"),
    Hello("alice", "pw", room="den"),
    ListRooms(),
    RoomList((RoomInfo("den", 2, "plans"), RoomInfo("games", 0))),
    RoomList(()),
    JoinRoom("games"),
    Status("den", ("a", "b"), 1.0, "0.1.0", (RoomInfo("den", 1, "", ("a",)), RoomInfo("x", 1))),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: Event) -> None:
    frame = wire.encode(event)
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert wire.decode(frame[:-1]) == event


def test_a_frame_takes_the_memory_its_bytes_need() -> None:
    # The room's log holds thousands of frames: one that kept an encoder's whole buffer (orjson
    # keeps 4 KiB however short the frame) made every connection cost 1.8 KiB more.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frames = [wire.encode(Join(f"u{i}", 1.0)) for i in range(1_000)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(frames[0]) < 50 and used / len(frames) < 200


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"hello","name":"a","password":"p","version":1,"since":18446744073709551616}',
        b'{"type":"hello","name":"a","password":"p","version":1,"since":-9223372036854775809}',
        b'{"type":"say","text":"x","id":18446744073709551616}',
        b'{"type":"say","text":"x","id":1e300}',
        b'{"type":"ping","data":"x","n":[18446744073709551616]}',
    ],
)
def test_integers_past_64_bits_read_as_the_standard_library_reads_them(
    line: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # orjson reads them as floats: a `since` past 64 bits was refused as "not an integer".
    def decoded() -> Event | str:
        try:
            return wire.decode(line)
        except RemoteProtocolError as exc:
            return str(exc)

    with_orjson = decoded()
    monkeypatch.setattr(wire, "_parse", json.loads)
    assert with_orjson == decoded()


def test_an_error_names_the_line_it_refuses_and_only_then() -> None:
    assert wire.encode(Error("unavailable", "later", "a-7")) == (
        b'{"type":"error","code":"unavailable","message":"later","id":"a-7"}\n'
    )
    assert wire.encode(Error("bad_frame", "oops")) == (
        b'{"type":"error","code":"bad_frame","message":"oops"}\n'
    )


def test_message_uses_from_on_the_wire() -> None:
    frame = json.loads(wire.encode(Message(3, 1.0, "bob", "yo")))
    assert frame == {"type": "message", "seq": 3, "ts": 1.0, "from": "bob", "text": "yo"}


@pytest.mark.parametrize("event", [Password("pw"), AskName()])
def test_text_only_events_have_no_json(event: Event) -> None:
    with pytest.raises(LocalProtocolError):
        wire.encode(event)


def joined_server() -> ServerConnection:
    conn = ServerConnection()
    conn.receive_data(wire.encode(Hello("alice", "pw")))
    assert conn.next_event() == Hello("alice", "pw")
    conn.send(Welcome("alice", "room", ("alice",)))
    assert conn.state is State.JOINED
    return conn


def drain(conn: ServerConnection | ClientConnection) -> list[object]:
    out: list[object] = []
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            out.append(("error", exc.code))
            if conn.state is State.CLOSED:
                return out
            continue
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return out
        out.append(event)


def feed_in_chunks(
    conn: ServerConnection | ClientConnection, data: bytes, cuts: list[int]
) -> list[object]:
    events: list[object] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        if cut > start:  # b"" would mean end of file
            conn.receive_data(data[start:cut])
        start = cut
        events += drain(conn)
    return events


@settings(max_examples=200)
@given(st.lists(client_events, max_size=10), st.lists(st.integers(0, 10_000), max_size=20))
def test_server_side_any_chunking_gives_the_same_events(
    events: list[Event], cuts: list[int]
) -> None:
    data = b"".join(wire.encode(e) for e in events)
    whole = joined_server()
    whole.receive_data(data)
    expected = drain(whole)
    assert expected == events
    assert feed_in_chunks(joined_server(), data, cuts) == events
    one_by_one = joined_server()
    got: list[object] = []
    for i in range(len(data)):
        one_by_one.receive_data(data[i : i + 1])
        got += drain(one_by_one)
    assert got == events


@settings(max_examples=200)
@given(st.lists(server_events, max_size=10), st.lists(st.integers(0, 10_000), max_size=20))
def test_client_side_any_chunking_gives_the_same_events(
    events: list[Event], cuts: list[int]
) -> None:
    def joined_client() -> ClientConnection:
        conn = ClientConnection()
        conn.send(Hello("alice", "pw"))
        conn.receive_data(wire.encode(Welcome("alice", "r", ("alice",))))
        assert isinstance(conn.next_event(), Welcome)
        return conn

    data = b"".join(wire.encode(e) for e in events)
    assert feed_in_chunks(joined_client(), data, cuts) == events


@settings(max_examples=300)
@given(st.binary(max_size=300), st.booleans())
def test_garbage_raises_only_the_protocol_error(data: bytes, joined: bool) -> None:
    conn = joined_server() if joined else ServerConnection()
    conn.receive_data(data)
    for _ in range(len(data) + 2):
        try:
            event = conn.next_event()
        except RemoteProtocolError:
            if conn.state is State.CLOSED:
                break
            continue
        if event is NEED_DATA:
            conn.receive_pause()
        if event is CONNECTION_CLOSED:
            break
        if conn.state is State.ANSWERING:
            break


def test_bad_frame_from_member_is_not_fatal() -> None:
    conn = joined_server()
    conn.receive_data(
        b'{"type":"nope"}\nnot json\n{"type":"say","text":5}\n' + wire.encode(Say("ok"))
    )
    assert drain(conn) == [("error", "bad_frame")] * 3 + [Say("ok")]
    assert conn.state is State.JOINED


def test_bad_frame_in_handshake_is_fatal() -> None:
    conn = ServerConnection()
    conn.receive_data(b'{"type":"say","text":"hi"}\n')
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is State.CLOSED


def test_unsupported_version() -> None:
    conn = ServerConnection()
    conn.receive_data(b'{"type":"hello","version":2,"name":"a","password":"b"}\n')
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "unsupported_version"


def test_line_without_newline_past_the_limit_is_fatal() -> None:
    conn = joined_server()
    conn.receive_data(b"{" + b"x" * wire.MAX_FRAME)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "frame_too_long"
    assert conn.state is State.CLOSED


def test_line_buffer_limit_counts_bytes_not_calls() -> None:
    buf = LineBuffer(10)
    for _ in range(10):
        buf.feed(b"a")
        assert buf.next_line() is None
    buf.feed(b"b")
    with pytest.raises(RemoteProtocolError):
        buf.next_line()


def test_server_waits_for_its_answer_before_reading_on() -> None:
    conn = ServerConnection()
    conn.receive_data(wire.encode(Hello("a", "b")) + wire.encode(Say("typed ahead")))
    assert conn.next_event() == Hello("a", "b")
    assert conn.next_event() is NEED_DATA
    conn.send(Welcome("a", "r", ("a",)))
    assert conn.next_event() == Say("typed ahead")


def test_sending_out_of_turn_is_a_local_error() -> None:
    conn = ServerConnection()
    conn.receive_data(b"{")
    with pytest.raises(LocalProtocolError):
        conn.send(Message(1, 0.0, "a", "b"))
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(Say("before hello"))


def test_error_then_close_in_json_handshake() -> None:
    conn = ServerConnection()
    conn.receive_data(wire.encode(Hello("a", "wrong")))
    conn.next_event()
    conn.send(Error("bad_password", "wrong password"))
    assert conn.state is State.CLOSED
    assert conn.next_event() is CONNECTION_CLOSED


def test_eof_closes() -> None:
    conn = joined_server()
    conn.receive_data(b"")
    assert conn.next_event() is CONNECTION_CLOSED
    assert conn.state is State.CLOSED


# -- plain-text mode --


def test_text_mode_prompts_after_a_pause() -> None:
    conn = ServerConnection()
    conn.receive_pause()
    assert conn.mode is Mode.TEXT
    assert conn.data_to_send() == b"Password: "
    conn.receive_data(b"secret\r\n")
    assert conn.next_event() == Password("secret")
    assert conn.send(AskName()) == b"Name: "
    conn.receive_data(b"alice\n")
    assert conn.next_event() == Hello("alice", "secret")


def test_text_mode_lines_end_at_a_pause_like_the_original_client() -> None:
    conn = ServerConnection()
    conn.receive_data(b"secret")  # sent before any prompt, no newline
    assert conn.mode is Mode.TEXT
    assert conn.next_event() is NEED_DATA
    conn.receive_pause()
    assert conn.next_event() == Password("secret")
    assert conn.data_to_send() == b""  # no prompt: it already answered
    conn.send(AskName())
    conn.receive_data(b"alice")
    conn.receive_pause()
    assert conn.next_event() == Hello("alice", "secret")


def test_text_mode_asks_again_for_a_taken_name() -> None:
    conn = ServerConnection()
    conn.receive_data(b"pw\n")
    conn.next_event()
    conn.send(AskName())
    conn.receive_data(b"alice\n")
    conn.next_event()
    assert conn.send(Error("name_taken", "taken")) == b"! taken\nName: "
    assert conn.state is State.GREETING
    conn.receive_data(b"bob\n")
    assert conn.next_event() == Hello("bob", "pw")
    conn.send(Welcome("bob", "room", ("bob",)))
    conn.receive_data(b"hello all\n/who\n\ntata\n")
    assert drain(conn) == [Say("hello all"), Who(), Quit()]


def test_text_mode_wrong_password_closes() -> None:
    conn = ServerConnection()
    conn.receive_data(b"nope\n")
    conn.next_event()
    assert conn.send(Error("bad_password", "wrong password")) == b"! wrong password\n"
    assert conn.state is State.CLOSED


def test_text_mode_invalid_utf8_in_handshake_is_fatal() -> None:
    conn = ServerConnection()
    conn.receive_data(b"\xff\xfe\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is State.CLOSED


def test_text_mode_renders_room_events() -> None:
    conn = ServerConnection()
    conn.receive_data(b"pw\n")
    conn.next_event()
    conn.send(AskName())
    conn.receive_data(b"bob\n")
    conn.next_event()
    conn.send(Welcome("bob", "room", ("bob",)))
    assert conn.send(Join("carol")) == b"* carol joined\n"
    assert conn.send(Leave("carol", "quit")) == b"* carol left (quit)\n"
    line = conn.send(Message(1, 0.0, "carol", "hi"))
    assert line.endswith(b"] carol: hi\n") and line.startswith(b"[")
    assert conn.send(Shutdown("bye")) == b"* The room is closing: bye\n"


@settings(max_examples=100)
@given(st.builds(Message, st.integers(0, 2**53), st.floats(0, 2e9), text, text), text)
def test_add_id_is_the_same_as_encoding_with_the_id(message: Message, id: str) -> None:
    with_id = Message(message.seq, message.ts, message.sender, message.text, id)
    assert wire.add_id(wire.encode(message), id) == wire.encode(with_id)


def test_client_still_receives_after_quit_until_the_server_closes() -> None:
    client = ClientConnection()
    client.send(Hello("a", "pw"))
    client.receive_data(wire.encode(Welcome("a", "r", ("a",))))
    assert isinstance(client.next_event(), Welcome)
    client.send(Say("last words", "9"))
    client.send(Quit())
    assert client.state is State.LEAVING
    client.receive_data(wire.encode(Message(1, 0.0, "a", "last words", "9")))
    assert client.next_event() == Message(1, 0.0, "a", "last words", "9")
    client.receive_data(b"")
    assert client.next_event() is CONNECTION_CLOSED
    with pytest.raises(LocalProtocolError):
        client.send(Say("too late"))


@pytest.mark.parametrize("id", [0, 42, -7, 2**53, -(2**53), "42", "", "x" * wire.MAX_FIELD_CHARS])
def test_an_id_comes_back_as_sent_same_json_type(id: str | int) -> None:
    say = wire.decode(json.dumps({"type": "say", "text": "hi", "id": id}).encode())
    assert say == Say("hi", id)
    echo = wire.add_id(wire.encode(Message(1, 0.0, "a", "hi")), id)
    assert json.loads(echo)["id"] == id and type(json.loads(echo)["id"]) is type(id)


@pytest.mark.parametrize(
    "id", [1.5, 1.0, 1e3, 2**53 + 1, -(2**53) - 1, True, None, [], {}, "x" * 1025]
)
def test_an_id_that_is_not_a_short_string_or_a_safe_integer_is_a_bad_frame(id: object) -> None:
    frame = json.dumps({"type": "say", "text": "hi", "id": id}).encode()
    if id is None:
        assert wire.decode(frame) == Say("hi")  # null is the same as no id
        return
    with pytest.raises(RemoteProtocolError) as info:
        wire.decode(frame)
    assert info.value.code == "bad_frame"


# -- rooms (docs/protocol.md, "Rooms") --


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        (
            Hello("alice", "pw", room="den"),
            b'{"type":"hello","version":1,"name":"alice","password":"pw","room":"den"}\n',
        ),
        (ListRooms(), b'{"type":"rooms"}\n'),
        (
            RoomList((RoomInfo("den", 2, "plans"), RoomInfo("games", 0))),
            b'{"type":"rooms","rooms":[{"name":"den","members":2,"topic":"plans"},'
            b'{"name":"games","members":0,"topic":""}]}\n',
        ),
        (JoinRoom("games"), b'{"type":"join","room":"games"}\n'),
        (Join("carol", 1.5), b'{"type":"join","name":"carol","ts":1.5}\n'),
        (
            Status("den", ("a",), 1.0, "0.1.0", (RoomInfo("den", 1, "", ("a",)),)),
            b'{"type":"status","room":"den","members":["a"],"uptime":1.0,"version":"0.1.0",'
            b'"rooms":[{"name":"den","members":1,"topic":"","names":["a"]}]}\n',
        ),
    ],
    ids=repr,
)
def test_room_frames_byte_by_byte(event: Event, frame: bytes) -> None:
    assert wire.encode(event) == frame
    assert wire.decode(frame[:-1]) == event


def test_a_hello_without_a_room_is_for_the_default_room() -> None:
    frame = b'{"type":"hello","version":1,"name":"alice","password":"pw"}'
    assert wire.decode(frame) == Hello("alice", "pw")
    assert wire.decode(frame).room is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"join"}',
        b'{"type":"join","room":5}',
        b'{"type":"join","room":"' + b"x" * 1025 + b'"}',
        b'{"type":"hello","version":1,"name":"a","password":"b","room":7}',
        b'{"type":"rooms","rooms":{}}',
        b'{"type":"rooms","rooms":[{"name":"den"}]}',
        b'{"type":"rooms","rooms":[{"name":"den","members":"2"}]}',
        b'{"type":"rooms","rooms":[5]}',
    ],
)
def test_bad_room_frames_are_bad_frames(frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        wire.decode(frame)
    assert info.value.code == "bad_frame"


def test_a_member_moves_and_is_welcomed_again() -> None:
    """Over the wire: `join` from the member; the other room's welcome and its history."""
    server = joined_server()
    server.receive_data(wire.encode(JoinRoom("games")) + wire.encode(ListRooms()))
    assert drain(server) == [JoinRoom("games"), ListRooms()]
    moved = server.send(Welcome("alice", "games", ("bob", "alice"), seq=4))
    history = server.send(Message(4, 1.0, "bob", "gg"))
    listing = server.send(RoomList((RoomInfo("den", 0), RoomInfo("games", 2))))
    assert server.state is State.JOINED
    client = ClientConnection()
    client.send(Hello("alice", "pw", room="den"))
    client.receive_data(wire.encode(Welcome("alice", "den", ("alice",))))
    assert isinstance(client.next_event(), Welcome)
    assert client.send(JoinRoom("games")) == b'{"type":"join","room":"games"}\n'
    data = moved + history + listing
    for i in range(len(data)):  # byte by byte
        client.receive_data(data[i : i + 1])
    assert drain(client) == [
        Welcome("alice", "games", ("bob", "alice"), seq=4),
        Message(4, 1.0, "bob", "gg"),
        RoomList((RoomInfo("den", 0), RoomInfo("games", 2))),
    ]
    assert client.state is State.JOINED


def test_a_welcome_may_follow_a_quit() -> None:
    """A move asked for just before leaving is still answered while the server drains."""
    client = ClientConnection()
    client.send(Hello("alice", "pw"))
    client.receive_data(wire.encode(Welcome("alice", "den", ("alice",))))
    client.next_event()
    client.send(JoinRoom("games"))
    client.send(Quit())
    client.receive_data(wire.encode(Welcome("alice", "games", ("alice",))))
    assert client.next_event() == Welcome("alice", "games", ("alice",))
    assert client.state is State.LEAVING


def test_text_mode_lists_rooms_and_moves() -> None:
    conn = ServerConnection()
    conn.receive_data(b"pw\n")
    conn.next_event()
    conn.send(AskName())
    conn.receive_data(b"bob\n")
    conn.next_event()
    conn.send(Welcome("bob", "den", ("bob",)))
    conn.receive_data(b"/rooms\n/join games\n/join\n")
    assert drain(conn) == [ListRooms(), JoinRoom("games"), ("error", "bad_command")]
    listing = conn.send(RoomList((RoomInfo("den", 1, "plans"), RoomInfo("games", 0))))
    assert listing == b"* Rooms (2):\n*   den (1 online): plans\n*   games (0 online)\n"
    welcome = conn.send(Welcome("bob", "games", ("carol", "bob")))
    assert welcome.startswith(b"Welcome to games, bob! Online (2): carol, bob\n")
