"""Redis goes away and comes back: a redis-server of the test's own, stopped and started again
on the same port while two servers post. Nothing acknowledged is lost or repeated with an
append-only file; without one, the numbering still never goes backwards."""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from backplanenode import Node, running
from multichat.server.backplane import (
    BackplaneEntry,
    BackplaneError,
    BackplaneUnavailable,
    NameTaken,
    Seat,
)
from multichat.server.backplane_codec import Keys, parse_id
from multichat.server.history_entries import LEAVE, MESSAGE, NOTICE, StoredEntry
from redisserver import RedisServer

ROOM = "den"


@pytest.fixture
def forgetful_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that keeps nothing across a restart (no append-only file)."""
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        yield server


def namespace() -> str:
    return f"test-{secrets.token_hex(4)}"


class Chatter:
    """A member posting as fast as the backplane lets it, keeping what became of each post."""

    def __init__(self, node: Node, seat: Seat) -> None:
        self.node = node
        self.seat = seat
        self.acked: dict[int, int] = {}  # message id -> seq
        self.maybe: set[int] = set()  # ids that may be in the stream
        self.refused: set[int] = set()  # ids that are not
        self.first_refusal: float | None = None

    async def run(self, stop: trio.Event) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            entry = StoredEntry(0, 1.0, MESSAGE, self.seat.name, f"{self.seat.name}:{i}")
            try:
                seq = await self.node.backplane.seats.publish(ROOM, entry, seat=self.seat, id=i)
            except BackplaneUnavailable as exc:
                if self.first_refusal is None:
                    self.first_refusal = trio.current_time()
                (self.maybe if exc.maybe_published else self.refused).add(i)
                await trio.sleep(0.01)
            else:
                self.acked[i] = seq
                await trio.sleep(0.002)


def messages(entries: list[BackplaneEntry]) -> list[BackplaneEntry]:
    return [e for e in entries if e.entry.type == MESSAGE]


async def sync_readers(*nodes: Node) -> None:
    """Post a marker and wait until every node has read it: everything before it is read."""
    marker = f"marker-{secrets.token_hex(3)}"
    await nodes[0].backplane.seats.publish(ROOM, StoredEntry(0, 1.0, NOTICE, "", marker))
    with trio.fail_after(15):
        for node in nodes:
            await node.recorder.wait_for(ROOM, lambda es: bool(es) and es[-1].entry.text == marker)


async def restart(server: RedisServer, down_for: float) -> None:
    await trio.to_thread.run_sync(server.stop)
    await trio.sleep(down_for)
    await trio.to_thread.run_sync(server.start)


async def test_redis_stopped_and_started_again_under_traffic_loses_and_repeats_nothing(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ns = namespace()
    async with running(own_redis.url, ns) as a, running(own_redis.url, ns) as b:
        for node in (a, b):
            await node.backplane.open_room(ROOM, history=0)
        chatters = [
            Chatter(a, await a.backplane.seats.join(ROOM, "ann")),
            Chatter(b, await b.backplane.seats.join(ROOM, "bea")),
        ]
        leaver = await b.backplane.seats.join(ROOM, "lee")
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for chatter in chatters:
                nursery.start_soon(chatter.run, stop)
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(own_redis.stop)
            stopped = trio.current_time()
            with trio.fail_after(5):
                for node in (a, b):
                    await node.wait_available(False)
            b.backplane.seats.leave_nowait(leaver, "quit")  # while Redis is away: it waits
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(own_redis.start)
            with trio.fail_after(10):
                for node in (a, b):
                    await node.wait_available(True)
            await trio.sleep(0.5)
            stop.set()
        for chatter in chatters:
            assert chatter.first_refusal is not None
            assert chatter.first_refusal - stopped < 2.5  # refused at once, not after a wait
            assert chatter.refused  # while Redis was away, posts failed fast
            assert len(chatter.acked) > 20
        await sync_readers(a, b)
        seen = a.recorder.entries[ROOM]
        assert seen == b.recorder.entries[ROOM]
        ids = [parse_id(e.id) for e in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # with the append-only file, nothing that was numbered is lost: no gap at all
        assert [e.entry.seq for e in messages(seen)] == list(range(1, len(messages(seen)) + 1))
        posted = Counter((e.origin.member, e.origin.id) for e in messages(seen))
        for chatter in chatters:
            token = chatter.seat.token
            for i, seq in chatter.acked.items():
                assert posted[token, i] == 1
                (entry,) = [e for e in seen if (e.origin.member, e.origin.id) == (token, i)]
                assert entry.entry.seq == seq
            assert all(posted[token, i] <= 1 for i in chatter.maybe)
            assert all(posted[token, i] == 0 for i in chatter.refused)
        assert [(e.entry.sender, e.entry.text) for e in seen if e.entry.type == LEAVE] == [
            ("lee", "quit")
        ]
        await a.backplane.seats.join(ROOM, "lee")  # the leave freed the name
    lines = [r for r in caplog.records if r.name == "multichat.backplane"]
    assert sum("lost:" in r.getMessage() for r in lines) == 2  # one line per server, each way
    assert sum("is back" in r.getMessage() for r in lines) == 2
    assert not [
        r for r in caplog.records if r.exc_info and r.name.startswith(("multichat", "coredis"))
    ]


async def test_while_redis_is_away_everything_refuses_at_once_and_nothing_crashes(
    own_redis: RedisServer,
) -> None:
    ns = namespace()
    async with running(own_redis.url, ns) as a:
        await a.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        await trio.to_thread.run_sync(own_redis.stop)
        with trio.fail_after(5):
            await a.wait_available(False)
        with trio.fail_after(1):
            for ask in (
                partial(a.backplane.seats.publish, ROOM, StoredEntry(0, 1.0, NOTICE, "", "x")),
                partial(
                    a.backplane.seats.publish,
                    ROOM,
                    StoredEntry(0, 1.0, MESSAGE, "a", "x"),
                    seat=alice,
                ),
                partial(a.backplane.seats.join, ROOM, "bob"),
                partial(a.backplane.seats.rename, alice, "al"),
                partial(a.backplane.open_room, "other", history=5),
                partial(a.backplane.members, ROOM),
                partial(a.backplane.recent, ROOM, 5),
                partial(a.backplane.since, ROOM, 0, 5),
            ):
                with pytest.raises(BackplaneUnavailable) as caught:
                    await ask()
                assert not caught.value.maybe_published
                assert "\n" not in str(caught.value)
        await trio.sleep(2.5)  # a while down: the node's tasks keep retrying, quietly
        await trio.to_thread.run_sync(own_redis.start)
        with trio.fail_after(10):
            await a.wait_available(True)
        assert a.availability == [False, True]
        seq = await a.backplane.seats.publish(
            ROOM, StoredEntry(0, 1.0, MESSAGE, "a", "x"), seat=alice
        )
        assert seq == 1
        with pytest.raises(NameTaken):
            await a.backplane.seats.join(
                ROOM, "alice"
            )  # its seat survived, with the append-only file
        assert a.lost == []


async def test_a_reader_cut_off_catches_up_from_the_last_entry_it_saw(
    own_redis: RedisServer,
) -> None:
    ns = namespace()
    async with running(own_redis.url, ns) as a, running(own_redis.url, ns) as b:
        for node in (a, b):
            await node.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        for i in range(10):
            await a.backplane.seats.publish(
                ROOM, StoredEntry(0, 1.0, MESSAGE, "alice", f"m{i}"), seat=alice
            )
        await sync_readers(a, b)
        # B's connections are cut (as by a network blip) while A goes on posting
        assert own_redis.command("CLIENT", "KILL", "USER", "default").startswith(b":")
        for i in range(10, 300):
            try:
                await a.backplane.seats.publish(
                    ROOM, StoredEntry(0, 1.0, MESSAGE, "alice", f"m{i}"), seat=alice
                )
            except BackplaneUnavailable:
                await a.wait_available(True)
        await sync_readers(a, b)
        assert a.recorder.entries[ROOM] == b.recorder.entries[ROOM]
        seqs = [e.entry.seq for e in messages(b.recorder.entries[ROOM])]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_a_redis_that_lost_its_data_carries_the_numbering_on_and_seats_join_again(
    forgetful_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    ns = namespace()
    async with (
        running(forgetful_redis.url, ns, password="pw") as a,
        running(forgetful_redis.url, ns, password="pw") as b,
    ):
        for node in (a, b):
            await node.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        bob = await b.backplane.seats.join(ROOM, "bob")
        for i in range(5):
            await a.backplane.seats.publish(
                ROOM, StoredEntry(0, 1.0, MESSAGE, "alice", f"m{i}"), seat=alice
            )
        await sync_readers(a, b)
        await restart(forgetful_redis, 0.2)
        with trio.fail_after(10):
            await a.wait_lost(1)
            await b.wait_lost(1)
        assert (a.lost, b.lost) == ([alice], [bob])
        assert "lost its data" in caplog.text
        alice = await a.backplane.seats.join(
            ROOM, "alice"
        )  # its name is free again: it joins again
        seq = await a.backplane.seats.publish(
            ROOM, StoredEntry(0, 1.0, MESSAGE, "alice", "after"), seat=alice
        )
        assert seq == 6  # never backwards: members' `since` still means what it meant
        with trio.fail_after(10):
            for node in (a, b):
                await node.recorder.wait_for(ROOM, lambda es: es[-1].entry.text == "after")
        assert a.recorder.entries[ROOM] == b.recorder.entries[ROOM]
        ids = [parse_id(e.id) for e in a.recorder.entries[ROOM]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # the password's digest was lost too, and is back: a server with another stays out
        assert forgetful_redis.command("HGET", Keys(ns).password, "digest").startswith(b"scrypt:")
        with pytest.raises(BackplaneError, match="another room password"):
            async with running(forgetful_redis.url, ns, password="other"):
                pass
