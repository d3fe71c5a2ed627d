"""The fan-out's flush policy on a real room, timed exactly on trio's virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise

import pytest
import trio
import trio.testing

from multichat.protocol import wire
from multichat.protocol.events import Event, Join, Leave, Message, Shutdown, Welcome
from multichat.server.entries import Dialect
from multichat.server.fanout import (
    BATCH_SECONDS,
    BUSY_POSTS,
    FLUSH_BYTES,
    PRESENCE_BATCH_SECONDS,
    PRESENCE_FLUSH_BYTES,
    RATE_SECONDS,
    SPACING,
    Fanout,
)
from multichat.server.limits import Limits
from multichat.server.room import Room
from multichat.server.transport import SendBatch

# Virtual times are sums of float steps: equal up to rounding.
EPSILON = 1e-9

Delivery = tuple[float, list[Event]]


class Inbox:
    """A member whose outlet takes its share at once and records when it got what. With `cost`,
    each take moves the virtual clock on that far, as a real write takes time."""

    def __init__(self, room: Room, name: str, cost: float = 0.0) -> None:
        self.room = room
        self.cost = cost
        self.deliveries: list[Delivery] = []
        self._read = 0
        self._arrived = trio.Event()
        self.member = room.join(
            name,
            dialect=Dialect.JSON,
            outlet=self,
            welcome=lambda display, names: wire.encode(Welcome(display, room.name, names)),
        )

    def flush_nowait(self, batch: SendBatch | None = None, /) -> None:
        data = self.room.log.take_nowait(self.member)
        if data:
            events = [wire.decode(line) for line in data.splitlines()]
            self.deliveries.append((trio.current_time(), events))
            self._arrived.set()
        if self.cost:
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.jump(self.cost)

    def kick(self, reason: str, /) -> None:
        raise AssertionError(f"{self.member.name} kicked: {reason}")

    def finish_nowait(self) -> None:
        pass

    async def next(self) -> Delivery:
        """The next delivery, waiting for it if it has not come yet."""
        while self._read == len(self.deliveries):
            self._arrived = trio.Event()
            await self._arrived.wait()
        self._read += 1
        return self.deliveries[self._read - 1]

    def skip_nowait(self) -> None:
        """Count every delivery so far as read: `next` waits for the one after."""
        self._read = len(self.deliveries)

    def texts(self) -> list[str]:
        return [e.text for _, events in self.deliveries for e in events if isinstance(e, Message)]


def quiet_room(*names: str, cost: float = 0.0) -> tuple[Room, Fanout, list[Inbox]]:
    """A room with members whose welcomes and join notices are already out; a flush takes
    `cost` for each of them."""
    room = Room("r", limits=Limits(), clock=lambda: 0.0, monotonic=trio.current_time)
    fanout = Fanout(room)
    inboxes = [Inbox(room, name, cost) for name in names]
    fanout.flush_nowait()
    for inbox in inboxes:
        inbox.deliveries.clear()
    return room, fanout, inboxes


@asynccontextmanager
async def running_room(
    *names: str, cost: float = 0.0
) -> AsyncIterator[tuple[Room, Fanout, list[Inbox], trio.Nursery]]:
    """A quiet room with its fan-out running, for at most 10 (virtual) seconds."""
    with trio.fail_after(10):
        room, fanout, inboxes = quiet_room(*names, cost=cost)
        async with trio.open_nursery() as nursery:
            await nursery.start(fanout.run)
            yield room, fanout, inboxes, nursery
            nursery.cancel_scope.cancel()


def message(seq: int, sender: str, text: str) -> Message:
    return Message(seq, 0.0, sender, text)


async def test_a_message_in_a_quiet_room_goes_out_when_it_is_posted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("alice", "bob") as (room, _fanout, (alice, bob), _):
        await trio.sleep(1)  # a quiet room: nothing happens for a while
        posted = trio.current_time()
        room.post(alice.member, "hi")
        assert await bob.next() == (posted, [message(1, "alice", "hi")])
        assert await alice.next() == (posted, [message(1, "alice", "hi")])  # the echo


async def test_messages_posted_in_one_scheduler_batch_share_one_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("alice", "bob", "carol") as (
        room,
        _fanout,
        (alice, bob, carol),
        nursery,
    ):
        posted = trio.current_time()
        room.post(alice.member, "one")
        room.post(alice.member, "two")

        async def read_and_post(inbox: Inbox, text: str) -> None:
            room.post(inbox.member, text)

        # Two readers in the next batch, as when one poll wakes both: the fan-out, woken
        # by "one", runs in that batch too, and must still wait for them.
        nursery.start_soon(read_and_post, bob, "three")
        nursery.start_soon(read_and_post, carol, "four")
        when, events = await bob.next()
        assert when == posted
        texts = [e.text for e in events if isinstance(e, Message)]
        assert len(events) == 4 and set(texts) == {"one", "two", "three", "four"}


# A flush of one member that takes this long: its notices then wait three times as long.
COST = PRESENCE_BATCH_SECONDS / 25


async def test_join_and_leave_notices_wait_for_a_multiple_of_the_last_flush(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("bob", cost=COST) as (room, _fanout, (bob,), _):
        # The room's last flush (its welcomes) began at 0 and took COST.
        due = COST + SPACING * COST
        carol = Inbox(room, "carol")
        await trio.sleep(COST / 2)
        dave = Inbox(room, "dave")
        await trio.sleep(COST / 2)
        room.remove(carol.member, "quit")
        when, events = await bob.next()
        # One write for all three: later ones do not postpone it.
        assert when == pytest.approx(due, abs=EPSILON)
        assert events == [Join("carol", 0.0), Join("dave", 0.0), Leave("carol", "quit", 0.0)]
        # Its welcome came with the batch too, after bob's share.
        assert dave.deliveries[0][0] == pytest.approx(when + COST, abs=EPSILON)


async def test_a_slow_flush_holds_notices_no_longer_than_the_presence_batch(
    autojump_clock: trio.abc.Clock,
) -> None:
    slow = PRESENCE_BATCH_SECONDS / 2  # three times that is past the batch's end
    async with running_room("bob", cost=slow) as (room, _fanout, (bob,), _):
        Inbox(room, "carol")
        when, events = await bob.next()
        assert when == pytest.approx(PRESENCE_BATCH_SECONDS, abs=EPSILON)
        assert events == [Join("carol", 0.0)]


async def test_a_join_notice_in_a_quiet_room_goes_out_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("bob", cost=COST) as (room, _fanout, (bob,), _):
        await trio.sleep(PRESENCE_BATCH_SECONDS * 3)  # nothing flushed for a while
        joined = trio.current_time()
        carol = Inbox(room, "carol")
        assert await bob.next() == (joined, [Join("carol", 0.0)])
        # What follows within the spacing waits for its end, all in one write (that flush
        # took COST, bob's share).
        flushed = joined + COST
        Inbox(room, "dave")
        room.remove(carol.member, "quit")
        when, events = await bob.next()
        assert when == pytest.approx(flushed + SPACING * COST, abs=EPSILON)
        assert events == [Join("dave", 0.0), Leave("carol", "quit", 0.0)]


async def test_join_notices_in_a_room_that_flushes_in_no_time_go_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("bob") as (room, _fanout, (bob,), _):
        for name in ("carol", "dave"):
            joined = trio.current_time()
            Inbox(room, name)
            assert await bob.next() == (joined, [Join(name, 0.0)])


async def test_a_message_takes_waiting_join_notices_along_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("alice", "bob", cost=COST) as (room, _fanout, (alice, bob), _):
        Inbox(room, "carol")
        await trio.sleep(COST)  # the notice is due later than this
        posted = trio.current_time()
        room.post(alice.member, "welcome, carol")
        assert await bob.next() == (
            pytest.approx(posted + COST, abs=EPSILON),  # after alice's share
            [Join("carol", 0.0), message(1, "alice", "welcome, carol")],
        )


async def test_a_flush_worth_of_join_notices_goes_out_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_room("bob", cost=COST) as (room, _fanout, (bob,), _):
        Inbox(room, "first")
        await bob.next()  # after a quiet spell, at once; the next notices wait for 3 x COST
        joined = trio.current_time()
        guests = 0
        while room.unflushed() < PRESENCE_FLUSH_BYTES:
            Inbox(room, f"guest{guests}")
            guests += 1
        when, events = await bob.next()
        assert when == pytest.approx(joined, abs=EPSILON)  # not held for a message's worth
        assert events == [Join(f"guest{i}", 0.0) for i in range(guests)]


async def busy_room_posts(
    room: Room, fanout: Fanout, alice: Inbox, count: int, interval: float
) -> list[float]:
    """`count` posts from alice, `interval` apart; when each was posted, once all are out."""
    posted: list[float] = []
    for i in range(count):
        posted.append(trio.current_time())
        room.post(alice.member, str(i))
        fanout.posted_nowait()
        await trio.sleep(interval)
    while not alice.texts() or alice.texts()[-1] != str(count - 1):
        await alice.next()
    assert alice.texts() == [str(i) for i in range(count)]  # each once, in order
    alice.skip_nowait()
    return posted


def waits(deliveries: list[Delivery], posted: list[float]) -> list[float]:
    """How long each message waited for the flush that carried it."""
    starts = [when for when, events in deliveries for _ in events]
    return [start - post for start, post in zip(starts, posted, strict=True)]


async def test_a_busy_room_batches_by_the_length_of_its_flushes(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Twice the busy rate, for ten rate periods; each member's share of a flush takes a
    # quarter of the gap between posts. Alice comes first in every flush: her deliveries are
    # the flushes' starts.
    interval = RATE_SECONDS / (2 * BUSY_POSTS)
    count = 10 * BUSY_POSTS
    cost = interval / 4
    flush = 2 * cost
    async with running_room("alice", "bob", cost=cost) as (room, fanout, (alice, bob), _):
        posted = await busy_room_posts(room, fanout, alice, count, interval)
        deliveries = alice.deliveries
        assert bob.texts() == alice.texts()

        # Until the room counts as busy, every message goes out on its own, at once...
        quiet = BUSY_POSTS - 1
        for i in range(quiet):
            assert deliveries[i] == (posted[i], [message(i + 1, "alice", str(i))])
        # ...then the next flush starts SPACING times a flush's length after one ended,
        # sooner than BATCH_SECONDS, and carries what came meanwhile.
        busy = deliveries[quiet - 1 :]
        spaced = flush + SPACING * flush
        assert spaced < BATCH_SECONDS
        for (before, _), (after, _) in pairwise(busy):
            assert after - before >= spaced - EPSILON
        assert all(len(events) >= 2 for _, events in busy[2:-1])  # busy[1]: the first spaced
        assert max(waits(deliveries, posted)) <= spaced + EPSILON

        # A room that has calmed down delivers at once again, even a post that comes soon
        # after the last flush (the burst's last period was busy).
        await trio.sleep(2 * RATE_SECONDS)
        for seq in range(count + 1, count + 3):
            calm = trio.current_time()
            room.post(alice.member, "calm")
            assert await alice.next() == (calm, [message(seq, "alice", "calm")])
            await trio.sleep(interval / 2)


async def test_a_busy_room_flushes_at_least_once_per_batch_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Once the room is busy its flushes become slow: SPACING times their length would be past
    # BATCH_SECONDS, so they are BATCH_SECONDS apart, each carrying several messages.
    interval = RATE_SECONDS / (2 * BUSY_POSTS)
    count = 10 * BUSY_POSTS
    async with running_room("alice", "bob") as (room, fanout, (alice, bob), nursery):
        slow = BATCH_SECONDS / 4  # a flush of both: half the interval

        async def slow_down() -> None:
            await trio.sleep(RATE_SECONDS * 2)
            alice.cost = bob.cost = slow

        nursery.start_soon(slow_down)
        posted = await busy_room_posts(room, fanout, alice, count, interval)
        slowed = [(when, events) for when, events in alice.deliveries if when > RATE_SECONDS * 2]
        assert len(slowed) > 10
        for (before, _), (after, _) in pairwise(slowed):
            assert after - before == pytest.approx(BATCH_SECONDS, abs=EPSILON)
        # Several each: what was posted in the time between (the flush itself holds the
        # poster up, as a real one would the loop), after the first, which was already due.
        assert all(len(events) >= 4 for _, events in slowed[1:-1])
        assert max(waits(alice.deliveries, posted)) <= BATCH_SECONDS + EPSILON


async def test_a_reader_flushes_at_once_when_a_flush_worth_is_waiting(
    autojump_clock: trio.abc.Clock,
) -> None:
    big = "x" * 3000
    async with running_room("alice", "bob") as (room, fanout, (alice, bob), _):
        posts = 0
        while True:  # no checkpoint in here: only posted_nowait itself can deliver
            room.post(alice.member, big)
            posts += 1
            waiting = room.unflushed()
            fanout.posted_nowait()
            if waiting < FLUSH_BYTES:
                assert bob.deliveries == [], f"flushed early, at {waiting} bytes"
                continue
            assert len(bob.deliveries) == 1
            assert room.unflushed() == 0
            break
        assert bob.texts() == [big] * posts
        # The run loop wakes for the posts it was told of, finds nothing left to flush,
        # and sends nothing twice: the next write has only what came after.
        now = trio.current_time()
        room.post(alice.member, "after")
        await bob.next()  # the one written inside posted_nowait
        assert await bob.next() == (now, [message(posts + 1, "alice", "after")])


async def test_closing_flushes_the_shutdown_notice_and_ends_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(10):
        room, fanout, (alice, bob) = quiet_room("alice", "bob")
        async with trio.open_nursery() as nursery:
            await nursery.start(fanout.run)
            closed = trio.current_time()
            room.post(alice.member, "last words")
            room.close("the host stopped the room")
        # The nursery is done only because run returned, at the time of the close.
        assert trio.current_time() == closed
        expected = [message(1, "alice", "last words"), Shutdown("the host stopped the room")]
        assert bob.deliveries == [(closed, expected)]
        assert alice.deliveries == [(closed, expected)]
        assert room.unflushed() == 0


async def test_closing_does_not_wait_for_the_presence_batch(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(10):
        room, fanout, (bob,) = quiet_room("bob", cost=COST)
        async with trio.open_nursery() as nursery:
            await nursery.start(fanout.run)
            Inbox(room, "carol")
            await trio.sleep(COST)  # the notice is due later than this
            closed = trio.current_time()
            room.close("bye")
        assert trio.current_time() == pytest.approx(closed + COST, abs=EPSILON)  # bob's share
        assert bob.deliveries == [(closed, [Join("carol", 0.0), Shutdown("bye")])]


async def test_run_started_on_a_closed_room_flushes_and_returns(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(10):
        room, fanout, (bob,) = quiet_room("bob")
        room.close("closed before the fan-out ran")
        await fanout.run()
        assert bob.deliveries == [
            (trio.current_time(), [Shutdown("closed before the fan-out ran")])
        ]
