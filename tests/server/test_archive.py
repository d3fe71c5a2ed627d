"""A room with a history: nothing is read before it is stored, and a restart forgets nothing."""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture
from multichat.protocol.events import (
    ConnectionClosed,
    Error,
    Hello,
    Join,
    Leave,
    Message,
    Moderate,
    Quit,
    Say,
    Welcome,
)
from multichat.server.history import HistoryError, HistoryStore
from multichat.server.listeners import ChatServer

STEP = 10


@asynccontextmanager
async def room_with(store: HistoryStore) -> AsyncIterator[RoomFixture]:
    server = ChatServer(PASSWORD, limits=RELAXED, history=store)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        yield RoomFixture(server, port, nursery)
        server.shutdown_nowait("test over")


async def test_a_history_process_that_cannot_start_stops_the_server_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    store = HistoryStore.open(tmp_path / "history.sqlite3")
    server = ChatServer(PASSWORD, limits=RELAXED, history=store)
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            with pytest.raises(HistoryError) as raised:
                await nursery.start(server.serve, 0, "127.0.0.1")
    message = str(raised.value)
    assert "cannot start the history's process" in message and "\n" not in message
    store.close()


async def test_a_history_that_cannot_be_read_at_start_stops_the_server_unserved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "history.sqlite3"
    store = HistoryStore.open(path)
    path.write_bytes(b"not a database, " * 1024)  # after the open's checks
    server = ChatServer(PASSWORD, limits=RELAXED, history=store)
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            with pytest.raises(HistoryError, match=r"cannot read the history .*not a database"):
                await nursery.start(server.serve, 0, "127.0.0.1")
    # The line tools wait for never came: nobody was told to connect to a room that is not up.
    logged = [record.getMessage() for record in caplog.records]
    assert not [line for line in logged if "serving room" in line]
    store.close()


async def test_a_restart_carries_on_seq_history_and_bans(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = HistoryStore.open(path)
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob")
            for i in range(3):
                await alice.say(f"before {i}", str(i))
                await alice.expect(Message)
            await alice.send(Say("for bob only", "p", to="bob"))
            await bob.expect(Message)
            room.server.rooms.default.moderation.command(
                "host", Moderate("ban", "203.0.113.9", "spam"), by_host=True
            )
    store.close()
    store = HistoryStore.open(path)
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            carol = await Peer.open(room.port)
            await carol.send(Hello("carol", PASSWORD))
            welcome = await carol.next_event()
            shown = []
            while len(shown) < 3:
                event = await carol.next_event()
                if isinstance(event, Message):
                    shown.append(event.text)
            await carol.say("after", "a")
            echo = await carol.expect(Message)
            bans = room.server.rooms.default.moderation.command(
                "host", Moderate("bans"), by_host=True
            )
    store.close()
    assert isinstance(welcome, Welcome) and welcome.seq == 4
    assert shown == ["before 0", "before 1", "before 2"], "and not bob's private message"
    assert isinstance(echo, Message) and echo.seq == 5
    assert [b.address for b in bans.bans] == ["203.0.113.9"]  # type: ignore[union-attr]


async def test_a_resume_reaches_past_a_restart_and_private_messages_only_for_parties(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.sqlite3"
    store = HistoryStore.open(path)
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob")
            await alice.say("public one", "1")
            await alice.expect(Message)
            await alice.send(Say("for bob", "2", to="bob"))
            await alice.expect(Message)
            await alice.say("public two", "3")
            await alice.expect(Message)
            await bob.aclose()
    store.close()
    store = HistoryStore.open(path)
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            back = await Peer.open(room.port)
            await back.send(Hello("bob", PASSWORD, since=0))
            assert isinstance(await back.next_event(), Welcome)
            bob_sees = [await back.expect(Message) for _ in range(3)]
            other = await Peer.open(room.port)
            await other.send(Hello("eve", PASSWORD, since=0))
            assert isinstance(await other.next_event(), Welcome)
            eve_sees = [await other.expect(Message) for _ in range(2)]
    store.close()
    assert [m.text for m in bob_sees if isinstance(m, Message)] == [
        "public one",
        "for bob",
        "public two",
    ]
    assert [m.text for m in eve_sees if isinstance(m, Message)] == ["public one", "public two"]


class Gate:
    """Another connection to the history file: while it holds the file's write lock, commits
    wait for it (SQLite waits up to history_file.BUSY_SECONDS, far longer than these tests)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)

    def clear(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def set(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self.set()
        self._conn.close()


async def test_nobody_sees_a_message_before_it_is_stored(tmp_path: Path) -> None:
    """The echo is the acknowledgement: it, and everyone's copy, wait for the commit."""
    store = HistoryStore.open(tmp_path / "history.sqlite3")
    gate = Gate(tmp_path / "history.sqlite3")
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob")
            await alice.expect(Join)
            gate.clear()
            await alice.say("wait for the disk", "w")
            with trio.move_on_after(0.5) as waited:
                await bob.expect(Message)
            assert waited.cancelled_caught, "bob saw it before it was stored"
            with trio.move_on_after(0.2) as waited:
                await alice.expect(Message)
            assert waited.cancelled_caught, "the echo came before the commit"
            gate.set()
            echo = await alice.expect(Message)
            seen = await bob.expect(Message)
    gate.close()
    store.close()
    assert isinstance(echo, Message) and echo.id == "w"
    assert isinstance(seen, Message) and seen.text == "wait for the disk"


async def test_a_banned_address_stays_banned_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = HistoryStore.open(path)
    async with room_with(store) as room:
        room.server.rooms.default.moderation.command(
            "host", Moderate("ban", "127.0.0.1", "testing"), by_host=True
        )
    store.close()
    store = HistoryStore.open(path)
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            peer = await Peer.open(room.port)
            await peer.send(Hello("me", PASSWORD))
            refused = await peer.next_event()
            assert isinstance(await peer.next_event(), ConnectionClosed)
    store.close()
    assert isinstance(refused, Error) and refused.code == "banned"


async def test_a_member_dropped_by_a_post_leaves_after_it_in_the_history(
    tmp_path: Path,
) -> None:
    """The post that sets off the backlog check is stored before the leave it causes."""
    store = HistoryStore.open(tmp_path / "history.sqlite3")
    limits = RELAXED.replace(outbox_bytes=1024)
    server = ChatServer(PASSWORD, limits=limits, history=store)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        with trio.fail_after(STEP):
            import socket

            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(
                f'{{"type":"hello","version":1,"name":"stalled","password":"{PASSWORD}"}}\n'.encode()
            )
            sender = await Peer.join(port, "sender")
            left = None
            for i in range(400):  # until the stalled member is dropped, within bounds
                await sender.say("x" * 3000, str(i))
                event = await sender.next_event()
                while not isinstance(event, Message | Leave):
                    event = await sender.next_event()
                if isinstance(event, Leave):
                    left = event
                    break
                await trio.sleep(0.01)
            assert left is not None and left.reason == "too slow"
            await sender.say("still going", "last")
            echo = await sender.expect(Message)
            while isinstance(echo, Message) and echo.id != "last":
                echo = await sender.expect(Message)
        server.shutdown_nowait("test over")
        stalled.close()
    store.close()
    assert isinstance(echo, Message) and echo.id == "last"


async def test_a_kicked_member_hears_why_and_a_leaver_gets_its_last_echoes(
    tmp_path: Path,
) -> None:
    """Out of the room, a member's last frames wait for the history, and it waits for them."""
    store = HistoryStore.open(tmp_path / "history.sqlite3")
    gate = Gate(tmp_path / "history.sqlite3")
    async with room_with(store) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob")
            gate.clear()  # the disk is slow now
            await alice.say("my last words", "last")
            await alice.send(Quit())
            room.server.rooms.default.moderation.command(
                "host", Moderate("kick", "bob", "rude"), by_host=True
            )
            await trio.sleep(0.2)
            gate.set()
            echo = await alice.expect(Message)
            while not isinstance(await alice.next_event(), ConnectionClosed):
                pass  # perhaps bob's leave, if the kick came first
            error = await bob.expect(Error)
            assert isinstance(await bob.next_event(), ConnectionClosed)
    gate.close()
    store.close()
    assert isinstance(echo, Message) and echo.id == "last"
    assert isinstance(error, Error) and error.code == "kicked"
