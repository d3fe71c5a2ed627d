"""The real server on a loopback port, driven by real sockets."""

from __future__ import annotations

import socket
import sys
from dataclasses import replace

import trio

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, read_until, start_room
from multichat.protocol.events import (
    ConnectionClosed,
    Error,
    Hello,
    Join,
    Leave,
    Members,
    Message,
    Quit,
    Shutdown,
    Welcome,
    Who,
)
from multichat.server.delivery import DRAIN_TASK
from multichat.server.limits import Limits


async def test_join_with_good_and_bad_password(room: RoomFixture) -> None:
    with trio.fail_after(10):
        alice = await room.join("alice")
        assert alice.welcome == Welcome("alice", "multichat", ("alice",))
        intruder = await Peer.open(room.port)
        await intruder.send(Hello("mallory", "guess"))
        assert await intruder.next_event() == Error("bad_password", "wrong password")
        assert isinstance(await intruder.next_event(), ConnectionClosed)
        bob = await room.join("bob")
        assert bob.welcome is not None and bob.welcome.members == ("alice", "bob")
        assert await alice.next_event() == Join("bob", (await _join_ts(room, "bob")))


async def _join_ts(room: RoomFixture, name: str) -> float:
    # The join notice's timestamp is the server's; read it from the log for an exact match.
    for entry in room.server.room.log._entries:
        if isinstance(entry.event, Join) and entry.event.name == name:
            return entry.event.ts
    raise AssertionError(name)


async def test_duplicate_name_in_another_case(room: RoomFixture) -> None:
    with trio.fail_after(10):
        first = await room.join("Alice")
        for taken in ("alice", "ALICE", "ａｌｉｃｅ"):
            peer = await Peer.open(room.port)
            await peer.send(Hello(taken, PASSWORD))
            event = await peer.next_event()
            assert isinstance(event, Error) and event.code == "name_taken", taken
        await first.aclose()


async def test_twenty_clients_fifty_messages_same_order(room: RoomFixture) -> None:
    clients, each = 20, 50
    with trio.fail_after(60):
        peers = [await room.join(f"user{i}") for i in range(clients)]
        received: dict[int, list[tuple[int, str, str]]] = {}

        async def read_all(i: int, peer: Peer) -> None:
            got: list[tuple[int, str, str]] = []
            while len(got) < clients * each:
                event = await peer.next_event()
                assert not isinstance(event, ConnectionClosed)
                if isinstance(event, Message):
                    got.append((event.seq, event.sender, event.text))
            received[i] = got

        async def send_all(i: int, peer: Peer) -> None:
            for n in range(each):
                await peer.say(f"{i}:{n}", id=str(n))

        async with trio.open_nursery() as nursery:
            for i, peer in enumerate(peers):
                nursery.start_soon(read_all, i, peer)
                nursery.start_soon(send_all, i, peer)
    first = received[0]
    assert len(first) == clients * each
    assert [seq for seq, _, _ in first] == sorted(seq for seq, _, _ in first)
    assert len({text for _, _, text in first}) == clients * each
    for i in range(clients):
        assert received[i] == first  # everyone saw the same messages in the same order
        mine = [int(text.split(":")[1]) for _, sender, text in first if sender == f"user{i}"]
        assert mine == list(range(each))  # and each sender's in the order sent


async def test_tata_and_eof_each_produce_exactly_one_leave(room: RoomFixture) -> None:
    with trio.fail_after(10):
        watcher = await room.join("watcher")
        quitter = await room.join("quitter")
        await quitter.send(Quit())
        closer = await room.join("closer")
        await closer.aclose()
        text = await trio.open_tcp_stream("127.0.0.1", room.port)
        buf = bytearray()
        await text.send_all(f"{PASSWORD}\n".encode())
        await read_until(text, b"Name: ", buf)
        await text.send_all(b"typist\n")
        await read_until(text, b"leave.\n", buf)
        await text.send_all(b"tata\n")
        assert await text.receive_some(1000) == b""  # the server closed it
        marker = await room.join("marker")  # everything before this join is in the log
        await marker.aclose()
        leaves: list[Leave] = []
        while True:
            event = await watcher.next_event()
            if isinstance(event, Leave):
                leaves.append(event)
                if event.name == "marker":
                    break
    assert [(e.name, e.reason) for e in leaves] == [
        ("quitter", "quit"),
        ("closer", "disconnected"),
        ("typist", "quit"),
        ("marker", "disconnected"),
    ]


async def test_members_wait_in_the_servers_epoll_until_they_leave(room: RoomFixture) -> None:
    # (server/readiness.py; where there is no epoll, every wait is trio's and none registers)
    epoll = sys.platform == "linux"
    with trio.fail_after(10):
        watcher = await room.join("watcher")
        quitter, closer, talker = [await room.join(name) for name in ("q", "c", "t")]
        readiness = room.server.ctx.readiness
        assert len(readiness) == (4 if epoll else 0)
        await quitter.send(Quit())
        await closer.aclose()
        for _ in range(3):  # each wait ends, and the next begins
            await talker.say("still here")
        left, said = set(), 0
        while len(left) < 2 or said < 3:
            event = await watcher.next_event()
            if isinstance(event, Leave):
                left.add(event.name)
            elif isinstance(event, Message):
                said += 1
        assert left == {"q", "c"}
        assert len(readiness) == (2 if epoll else 0)
        await talker.aclose()
        while not isinstance(event := await watcher.next_event(), Leave):
            pass
        assert event.name == "t" and len(readiness) == (1 if epoll else 0)


async def test_a_client_that_never_reads_is_dropped_while_others_get_everything() -> None:
    count, size = 2500, 4000  # 10 MB: more than any socket buffer holds
    async with start_room() as room:
        with trio.fail_after(60):
            stalled = await room.join("stalled")
            stalled.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sender = await room.join("sender")
            readers = [await room.join(f"reader{i}") for i in range(3)]
            seen: dict[str, int] = {}
            left: list[Leave] = []

            async def read(peer: Peer, name: str) -> None:
                n = 0
                while n < count:
                    event = await peer.next_event()
                    assert not isinstance(event, ConnectionClosed)
                    if isinstance(event, Message):
                        assert event.text == f"{n:06d}" + "x" * (size - 6)
                        n += 1
                    elif isinstance(event, Leave) and name == "reader0":
                        left.append(event)
                seen[name] = n

            async with trio.open_nursery() as nursery:
                for i, peer in enumerate(readers):
                    nursery.start_soon(read, peer, f"reader{i}")
                nursery.start_soon(read, sender, "sender")  # it must read its echoes too
                for n in range(count):
                    await sender.say(f"{n:06d}" + "x" * (size - 6))
            assert seen == {"sender": count} | {f"reader{i}": count for i in range(3)}
            while not left:  # a send stuck for SEND_STALL_SECONDS: dropped by then
                event = await readers[0].next_event()
                if isinstance(event, Leave):
                    left.append(event)
            assert [(e.name, e.reason) for e in left] == [("stalled", "too slow")]
            assert "stalled" not in room.server.room.names()


async def test_shutdown_delivers_pending_then_notice_then_closes() -> None:
    async with start_room() as room:
        with trio.fail_after(20):
            alice = await room.join("alice")
            bob = await room.join("bob")
            for n in range(200):
                await alice.say(f"m{n}", id=str(n))
            while True:  # alice's own echo of her last message: all 200 were accepted
                event = await alice.next_event()
                if isinstance(event, Message) and event.id == "199":
                    break
            room.server.shutdown_nowait("maintenance")
            texts: list[str] = []
            while True:
                event = await bob.next_event()
                assert not isinstance(event, ConnectionClosed), "closed before the notice"
                if isinstance(event, Message):
                    texts.append(event.text)
                elif isinstance(event, Shutdown):
                    assert event.reason == "maintenance"
                    break
            assert texts == [f"m{n}" for n in range(200)]
            assert isinstance(await bob.next_event(), ConnectionClosed)
            with trio.fail_after(10):
                await room.server.stopped.wait()


async def fill_socket(room: RoomFixture, sender: Peer, member: Peer, name: str) -> int:
    """Post 1 KB messages from `sender` until the server's socket to `member` (joined as
    `name`) is full, its buffers made small first; returns how many were posted."""
    member.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    (session,) = [s for s in room.server._sessions if s.member and s.member.name == name]
    session.transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    while not session.transport.blocked:
        assert sent < 2000, "the socket never filled"  # 2 MB at most
        await sender.say(f"{sent:04d}" + "x" * 996)
        sent += 1
    return sent


async def test_shutdown_does_not_wait_for_a_member_whose_socket_is_full() -> None:
    """A member that stopped reading, but is not yet past its outbox, cannot hold the room open:
    the others get the notice at once, and the server stops within the grace period."""
    grace = 1.0
    limits = replace(RELAXED, shutdown_grace_seconds=grace, outbox_bytes=16 * 1024 * 1024)
    async with start_room(limits) as room:
        with trio.fail_after(20):
            reader = await room.join("reader")
            await fill_socket(room, reader, await room.join("stalled"), "stalled")
            assert "stalled" in room.server.room.names()  # blocked, within its outbox
            asked = trio.current_time()
            room.server.shutdown_nowait("bye")
            while not isinstance(event := await reader.next_event(), Shutdown):
                assert not isinstance(event, ConnectionClosed), "closed before the notice"
            await room.server.stopped.wait()
            assert trio.current_time() - asked < grace + 2


async def test_a_member_whose_socket_was_full_gets_everything_then_the_notice() -> None:
    """Shutdown while a member's socket is full: once it reads again, it gets every message
    that was accepted, in order, then the notice, then the close."""
    limits = replace(RELAXED, outbox_bytes=16 * 1024 * 1024)
    async with start_room(limits) as room:
        with trio.fail_after(20):
            slow = await room.join("slow")
            sent = await fill_socket(room, await room.join("reader"), slow, "slow")
            room.server.shutdown_nowait("bye")
            texts: list[str] = []
            while not isinstance(event := await slow.next_event(), Shutdown):
                assert not isinstance(event, ConnectionClosed), "closed before the notice"
                if isinstance(event, Message):
                    texts.append(event.text[:4])
            assert texts == [f"{n:04d}" for n in range(sent)]
            assert isinstance(await slow.next_event(), ConnectionClosed)


async def test_a_member_that_quits_while_its_socket_is_full_gets_everything_first() -> None:
    """Its drain task is waiting for room in the socket when the member quits: the drain stops,
    the closing connection sends the rest itself, and no drain task outlives it."""
    limits = replace(RELAXED, outbox_bytes=16 * 1024 * 1024)
    async with start_room(limits) as room:
        with trio.fail_after(20):
            slow = await room.join("slow")
            sent = await fill_socket(room, await room.join("reader"), slow, "slow")
            assert _drain_tasks() == 1
            await slow.send(Quit())
            texts: list[str] = []
            while not isinstance(event := await slow.next_event(), ConnectionClosed):
                if isinstance(event, Message):
                    texts.append(event.text[:4])
            assert texts == [f"{n:04d}" for n in range(sent)]
            assert "slow" not in room.server.room.names()
            assert _drain_tasks() == 0


def _drain_tasks() -> int:
    """How many drain tasks the whole task tree holds."""
    found = 0
    nurseries = list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            found += task.name == DRAIN_TASK
            nurseries.extend(task.child_nurseries)
    return found


async def test_shutdown_reaches_a_visitor_still_logging_in() -> None:
    async with start_room() as room:
        with trio.fail_after(10):
            text = await trio.open_tcp_stream("127.0.0.1", room.port)
            buf = bytearray()
            await read_until(text, b"Password: ", buf)
            room.server.shutdown_nowait("bye now")
            assert b"closing: bye now" in await read_until(text, b"\n", buf)


async def test_plain_text_mode_with_no_newlines_like_the_original_client(
    room: RoomFixture,
) -> None:
    with trio.fail_after(15):
        bob = await room.join("bob")
        raw = await trio.open_tcp_stream("127.0.0.1", room.port)
        buf = bytearray()
        await raw.send_all(PASSWORD.encode())  # before any prompt, no newline
        assert await read_until(raw, b"Name: ", buf) == b"Name: "
        await raw.send_all(b"Bob")  # taken, in another case
        assert b"taken" in await read_until(raw, b"Name: ", buf)
        await raw.send_all(b"carol")
        welcome = await read_until(raw, b"leave.\n", buf)
        assert welcome.startswith(b"Welcome to multichat, carol!")
        await raw.send_all(b"hello from nc\n")
        assert (await bob.expect(Message)).text == "hello from nc"  # type: ignore[attr-defined]
        await bob.say("hi carol")
        line = await read_until(raw, b"hi carol\n", buf)
        assert b"] bob: hi carol\n" in line
        await raw.send_all(b"/who\n")
        assert b"* Online (2): bob, carol\n" in await read_until(raw, b"carol\n", buf)
        await bob.send(Who())
        assert await bob.expect(Members) == Members(("bob", "carol"))


async def test_plain_text_wrong_password() -> None:
    async with start_room() as room:
        with trio.fail_after(10):
            raw = await trio.open_tcp_stream("127.0.0.1", room.port)
            buf = bytearray()
            await read_until(raw, b"Password: ", buf)
            await raw.send_all(b"nope\n")
            assert await read_until(raw, b"\n", buf) == b"! wrong password\n"
            assert await raw.receive_some(100) == b""


async def test_escape_sequences_never_reach_members(room: RoomFixture) -> None:
    with trio.fail_after(10):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await alice.say("\x1b[2Jhi\x1b]0;title\x07\r\u202eevil\x9b")
        event = await bob.expect(Message)
        assert isinstance(event, Message)
        assert not any(ch in event.text for ch in "\x1b\x07\r\u202e\x9b")
        assert "hi" in event.text and "evil" in event.text


async def test_handshake_deadline_closes_a_silent_json_client(autojump_clock: object) -> None:
    async with start_room(Limits(handshake_seconds=20)) as room:
        peer = await Peer.open(room.port)
        await peer.stream.send_all(b'{"type":"hel')  # a JSON client that stalls mid-frame
        with trio.fail_after(25):
            event = await peer.next_event()
        assert isinstance(event, Error) and event.code == "timeout"


async def test_accepted_connections_have_tcp_nodelay_and_keepalive(room: RoomFixture) -> None:
    # Plain-text members cannot answer pings; the kernel's keepalive finds them gone instead.
    with trio.fail_after(10):
        peer = await room.join("alice")
        (session,) = room.server._sessions
        sock = session.transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0  # no Nagle delay
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 90
        await peer.aclose()


async def test_a_numeric_id_is_echoed_as_a_number(room: RoomFixture) -> None:
    """Client authors coming from JSON-RPC number their requests; the echo keeps the type."""
    with trio.fail_after(10):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await alice.stream.send_all(b'{"type":"say","text":"one","id":17}\n')
        await alice.stream.send_all(b'{"type":"say","text":"two","id":"17"}\n')
        mine = [await alice.expect(Message) for _ in range(2)]
        theirs = [await bob.expect(Message) for _ in range(2)]
    assert [m.id for m in mine if isinstance(m, Message)] == [17, "17"]
    assert [m.id for m in theirs if isinstance(m, Message)] == [None, None]
