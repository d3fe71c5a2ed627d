"""The room without sockets: the log, cursors, shared renderings, and who is too slow."""

from __future__ import annotations

from multichat.server.entries import Dialect
from multichat.server.limits import Limits
from multichat.server.member import Member
from multichat.server.room import Room
from roomoutlet import RecordingOutlet


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_room(clock: Clock) -> Room:
    return Room("r", limits=Limits(), clock=lambda: 0.0, monotonic=clock)


def join(room: Room, name: str, woken: list[str]) -> Member:
    return room.join(
        name,
        dialect=Dialect.JSON,
        outlet=RecordingOutlet(lambda: woken.append(name)),
        welcome=lambda display, names: b"welcome\n",
    )


def test_every_append_is_reported_to_the_fan_out_with_how_many_posts_it_holds() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    appended: list[int] = []
    room.on_append = appended.append
    alice = join(room, "alice", woken)
    room.post(alice, "hi")
    room.remove(alice, "quit")
    assert appended == [0, 1, 0]
    assert woken == []  # broadcasts wake nobody: the fan-out decides when to flush


def test_entries_stored_together_are_reported_once_with_every_post_counted() -> None:
    # The fan-out's busy-room rate counts messages, however many a commit makes readable.
    room = make_room(Clock())
    stored: list[int] = []
    room.persist = lambda entry, index: stored.append(index)
    appended: list[int] = []
    room.on_append = appended.append
    alice = join(room, "alice", [])
    for text in ("one", "two", "three"):
        room.post(alice, text)
    join(room, "bob", [])
    assert appended == []  # nothing is readable before it is stored
    room.stored_nowait(stored[-1])
    assert appended == [3]
    assert room.log.seq == 3


def test_entries_appended_while_held_become_readable_together_at_the_end() -> None:
    room = make_room(Clock())
    appended: list[int] = []
    room.on_append = appended.append
    alice = join(room, "alice", [])
    with room.log.held():
        room.post(alice, "one")
        room.post(alice, "two")
        assert appended == [0] and room.log.seq == 0  # alice's join alone, so far
    assert appended == [0, 2]
    assert room.log.seq == 2


def test_the_fan_out_bookkeeping_tells_presence_from_messages() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    alice = join(room, "alice", woken)
    assert room.presence_only() and room.unflushed() > 0
    room.flushed_nowait()
    assert room.unflushed() == 0
    join(room, "bob", [])
    assert room.presence_only()
    room.post(alice, "a real message")
    assert not room.presence_only()
    room.flushed_nowait()
    assert room.presence_only() and room.unflushed() == 0


def test_members_at_the_same_cursor_share_one_rendering_but_the_sender_gets_its_own() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    alice, bob, carol = (join(room, name, woken) for name in ("alice", "bob", "carol"))
    for member in (alice, bob, carol):
        room.log.take_nowait(member)
    room.post(alice, "hi", id="7")
    to_bob, to_carol, to_alice = (room.log.take_nowait(m) for m in (bob, carol, alice))
    assert to_bob is to_carol  # rendered once
    assert b'"text":"hi"' in to_bob and b'"id"' not in to_bob
    assert b'"id":"7"' in to_alice  # the sender's echo is its acknowledgement
    assert room.log.take_nowait(bob) == b""


def server_frames(data: bytes) -> list[bytes]:
    """The payloads of unmasked WebSocket text frames, as a server sends them."""
    payloads = []
    while data:
        assert data[0] == 0x81  # FIN, text
        size, start = data[1], 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        payloads.append(data[start : start + size])
        data = data[start + size :]
    return payloads


def test_each_dialect_gets_a_stretch_with_its_own_echoes_and_private_lines() -> None:
    room = make_room(Clock())
    members = {
        dialect: room.join(
            dialect.name.lower(),
            dialect=dialect,
            outlet=RecordingOutlet(lambda: None),
            welcome=lambda display, names: b"",
        )
        for dialect in Dialect
    }
    for member in members.values():
        room.log.take_nowait(member)
    ws, js, text = members[Dialect.WEBSOCKET], members[Dialect.JSON], members[Dialect.TEXT]
    # Everyone else takes first: the WebSocket member's entries are framed by then.
    room.post(ws, "one", id="w1")
    room.post(js, "two", id="j1")
    room.post_private(js, ws, "psst", id="j2")
    room.post(text, "three")
    to_json = room.log.take_nowait(js).splitlines()
    to_text = room.log.take_nowait(text)
    to_ws = server_frames(room.log.take_nowait(ws))
    assert [b'"id"' in line for line in to_json] == [False, True, True, False]
    assert to_text.count(b"\n") == 3 and b"psst" not in to_text
    assert len(to_ws) == 4
    assert to_ws[0] == to_json[0][:-1] + b',"id":"w1"}'  # its echo
    others = [to_json[1].replace(b',"id":"j1"', b""), to_json[2].replace(b',"id":"j2"', b"")]
    assert to_ws[1:] == [*others, to_json[3]]  # the private line without the sender's id
    assert b'"to":"websocket"' in to_ws[2]


def test_a_frame_for_one_member_wakes_only_that_member_and_keeps_its_place() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    alice, bob = join(room, "alice", woken), join(room, "bob", woken)
    room.log.take_nowait(alice)
    room.log.take_nowait(bob)
    room.post(alice, "first")
    room.send_nowait(bob, b"private\n")
    room.post(alice, "second")
    assert woken == ["bob"]
    data = room.log.take_nowait(bob)
    assert data.index(b"first") < data.index(b"private") < data.index(b"second")


def test_only_a_stuck_writer_is_too_slow() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    outlet = RecordingOutlet()
    alice = join(room, "alice", woken)
    slow = room.join(
        "slow",
        dialect=Dialect.JSON,
        outlet=outlet,
        welcome=lambda display, names: b"welcome\n",
    )
    big = "x" * 3000
    for _ in range(60):  # 180 KB: over the outbox, but slow's socket has not refused more yet
        room.post(alice, big)
        room.log.take_nowait(alice)
    assert slow in room and outlet.kicked == []
    slow.sending = clock.now  # its socket now refuses more: the kernel buffer is full
    clock.now += 1
    room.sweep_nowait()
    assert slow not in room and outlet.kicked and outlet.kicked[0].startswith("too slow")


def test_a_welcome_lists_everyone_in_join_order_through_renames_and_leaves() -> None:
    room = make_room(Clock())
    listed: list[tuple[str, ...]] = []

    def welcome(display: str, names: tuple[str, ...]) -> bytes:
        listed.append(names)
        return b"welcome\n"

    def join_listing(name: str) -> Member:
        return room.join(
            name,
            dialect=Dialect.JSON,
            outlet=RecordingOutlet(),
            welcome=welcome,
        )

    alice, bob = join_listing("alice"), join_listing("Bob")
    assert listed[-1] == ("alice", "Bob")
    room.rename(alice, "Alicia")
    room.rename(bob, "bob")  # its own name in another case: still the same seat
    join_listing("carol")
    assert listed[-1] == ("Alicia", "bob", "carol")
    room.remove(bob, "quit")
    join_listing("Bob")  # a name set free by a leave can be taken again
    assert listed[-1] == ("Alicia", "carol", "Bob")
    assert room.names() == ("Alicia", "carol", "Bob") == tuple(m.name for m in room.members())


def test_a_name_on_another_server_is_found_as_names_compare_unless_a_member_here_has_it() -> None:
    room = make_room(Clock())
    assert room.remote_name("bob") is None  # no backplane: nobody is elsewhere
    room.remote = {"bob": "Bob", "carol": "Carol"}
    assert room.remote_name("BOB") == "Bob" and room.on_another_server("bob")
    assert room.remote_name("dave") is None and room.remote_name("") is None
    join(room, "carol", [])  # the seat here wins while both are listed (a move in flight)
    assert room.remote_name("carol") is None and not room.on_another_server("Carol")
