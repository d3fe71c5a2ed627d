"""The seat table and the changes made through it (backplane_seats.py), against a real writer
and a Redis that answers each APPLY as a test says: what this server holds follows what the
script answered. Against a real Redis, seats are tested through whole servers
(test_backplane.py, test_backplane_outage.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from multichat.protocol.names import name_key
from multichat.server.backplane_address import parse_address
from multichat.server.backplane_codec import Keys, Seat
from multichat.server.backplane_errors import BackplaneUnavailable, NameTaken, NotJoined
from multichat.server.backplane_link import Link
from multichat.server.backplane_resp import Arg, RespConnection
from multichat.server.backplane_seats import Seats
from multichat.server.backplane_writer import Writer
from multichat.server.history_entries import MESSAGE, StoredEntry

ROOM = "lobby"
ADDRESS = parse_address("redis://127.0.0.1:6379")

# An op as the APPLY script gets it: [kind, room, key, token, arg1, arg2, fields, ...].
Row = list[object]


class ScriptedRedis(RespConnection):
    """Answers each op of every APPLY with `status(op)`, numbering appended entries."""

    def __init__(self, status: Callable[[Row], str]) -> None:
        super().__init__(ADDRESS, "n1")
        self.status = status
        self.ops: list[Row] = []
        self._seq = 0

    async def script(
        self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> object:
        await trio.lowlevel.checkpoint()
        answers = []
        for op in json.loads(str(args[3])):
            self.ops.append(op)
            status = self.status(op)
            if status == "ok":
                self._seq += 1
            answers.append([status, self._seq, f"{self._seq}-0" if status == "ok" else ""])
        return answers


def record(op: Row) -> list[object]:
    """The stream record an op appends (its fields are ["d", record])."""
    fields = op[6]
    assert isinstance(fields, list)
    parsed = json.loads(fields[1])
    assert isinstance(parsed, list)
    return parsed


def message(text: str) -> StoredEntry:
    return StoredEntry(0, 1_700_000_000.0, MESSAGE, "alice", text)


@asynccontextmanager
async def running(
    status: Callable[[Row], str] = lambda op: "ok",
) -> AsyncIterator[tuple[Seats, ScriptedRedis, Link]]:
    redis = ScriptedRedis(status)
    link = Link(ADDRESS, on_change=lambda up: None)
    link.back(quiet=True)
    writer = Writer(link, node="n1", keys=Keys(), retention=0, floors={})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, redis)
            yield Seats(writer, node="n1"), redis, link
            await writer.flush()
            nursery.cancel_scope.cancel()


async def test_a_join_holds_the_seat_and_a_taken_name_is_refused() -> None:
    async with running(lambda op: "taken" if op[4] == "Bob" else "ok") as (seats, redis, _):
        alice = await seats.join(ROOM, "Alice")
        with pytest.raises(NameTaken, match="'Bob' is taken"):
            await seats.join(ROOM, "Bob")
        assert seats.held() == [alice] and len(seats) == 1
        assert (alice.room, alice.key, alice.name) == (ROOM, name_key("Alice"), "Alice")
        assert [(op[0], op[4]) for op in redis.ops] == [("J", "Alice"), ("J", "Bob")]


async def test_a_post_the_script_finds_no_seat_for_drops_the_seat() -> None:
    # The script answers 'gone' when the seat was reaped meanwhile (its server taken for dead).
    async with running(lambda op: "gone" if op[0] == "P" else "ok") as (seats, redis, _):
        alice = await seats.join(ROOM, "alice")
        told: list[object] = []
        answered = trio.Event()

        def on_done(exc: object) -> None:
            told.append(exc)
            answered.set()

        seats.publish_nowait(ROOM, message("hi"), seat=alice, id=1, on_done=on_done)
        await answered.wait()
        assert isinstance(told[0], NotJoined) and seats.held() == []
        sent = len(redis.ops)
        with pytest.raises(NotJoined):  # known now: nothing is sent
            seats.publish_nowait(ROOM, message("again"), seat=alice, on_done=told.append)
        with pytest.raises(NotJoined):
            await seats.publish(ROOM, message("again"), seat=alice)
        assert len(redis.ops) == sent


async def test_posts_go_in_order_numbered_and_a_repeat_is_a_success() -> None:
    # 'dup': this seat posted this client id already; its first copy's echo is the echo.
    async with running(lambda op: "dup" if op[-1] == "s2" else "ok") as (seats, redis, _):
        alice = await seats.join(ROOM, "alice")
        told: list[object] = []
        for id in (2, "2", 3):
            seats.publish_nowait(
                ROOM, message(f"line {id!r}"), seat=alice, id=id, on_done=told.append
            )
        notice = await seats.publish(ROOM, StoredEntry(0, 1.0, "notice", "", "the host speaks"))
        assert told == [None, None, None]
        posts = [op for op in redis.ops if op[0] == "P"]
        # A number typed as a number and as a string are two ids; a server's notice has none.
        assert [op[-1] for op in posts[:3]] == ["n2", "s2", "n3"]
        assert len(posts[3]) == 7 and posts[3][3] == ""
        assert [record(op)[9] for op in posts] == [1, 2, 3, 4]  # each publish's number
        assert notice == 4  # the join, two posts and the notice appended; the repeat was not


async def test_while_redis_is_away_a_post_fails_at_once_and_a_leave_waits_for_it() -> None:
    async with running() as (seats, redis, link):
        alice = await seats.join(ROOM, "alice")
        link.lost(ConnectionError("gone"))
        with pytest.raises(BackplaneUnavailable, match="unreachable"):
            seats.publish_nowait(ROOM, message("hi"), seat=alice, on_done=lambda exc: None)
        seats.leave_nowait(alice, "quit")
        seats.leave_nowait(alice, "quit")  # twice: harmless
        assert seats.held() == [] and seats.tokens() == {alice.token}  # its leave waits
        link.back()
    assert [op[0] for op in redis.ops] == ["J", "L"]


async def test_drop_forgets_the_seats_it_holds_and_says_which() -> None:
    async with running() as (seats, _, _):
        alice = await seats.join(ROOM, "alice")
        bob = await seats.join(ROOM, "bob")
        stranger = Seat(ROOM, "carol", "carol", "0123456789abcdef")
        assert seats.drop([alice, stranger]) == [alice]
        assert seats.held() == [bob]
