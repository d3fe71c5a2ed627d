"""The fan-out: deciding when every member gets its share of the room's log, and giving it.

One message in, N copies out. The room appends each broadcast to its log once; a flush then
hands every member everything from its cursor to the head, in one non-blocking write each
(see `Transport.send_nowait`). A flush runs in one task, not in a writer task per member: the
measured cost of waking a task per member per message (three task switches around each
`send_all`) was most of the server's time, and each parked writer cost memory.

When to flush is the whole policy:
- a message goes out at the end of the scheduler batch it came in, so messages that arrive
  together (in one read, or from several readers at once) share one write per member;
- in a busy room (`BUSY_POSTS` messages or more in the last `RATE_SECONDS`) a flush waits
  after the last one for `SPACING` times that one's length, and at most until `BATCH_SECONDS`
  after it began: the fan-out writes at most a quarter of the time, and what piles up meanwhile
  goes in one write per member, however many messages;
- join and leave notices wait by the same rule, at most `PRESENCE_BATCH_SECONDS`, or until a
  message goes or `PRESENCE_FLUSH_BYTES` of them wait: at once after a quiet spell, within
  microseconds in a room of friends, and in batches in a storm of joins to a big room;
- whatever the timing, once `FLUSH_BYTES` are waiting, the reader that posted flushes at once.
"""

from __future__ import annotations

import math

import trio

from .room import Room
from .transport import SendBatch

# A flush's worth: with this much waiting, waiting longer buys nothing and costs memory. A
# burst (50 members, five senders) delivered a fifth more at 32 or 64 KiB than at 16, and no
# more at 128 or 256 (docs/benchmarks.md); Netty's write buffer high-water mark is 64 KiB too.
FLUSH_BYTES = 64 * 1024
# Join and leave notices flush sooner: members who joined between two flushes each get their
# own rendering of what they are owed, so a storm of joins to a big room holds a copy of the
# batch per member (64 KiB batches took 30 MiB more over 5,000 joins).
PRESENCE_FLUSH_BYTES = 16 * 1024
# A room is busy at 2,500 messages a second or more, as measured over the last 20 ms: no group of
# people types that fast, so only a flood or a very large room pays the delay...
RATE_SECONDS = 0.02
BUSY_POSTS = 50
# ...and a busy room's flushes are batched by backlog, not by time (as a kernel's autocork
# coalesces only what piles up while a send is in flight): after a flush, what comes next waits
# this many times its length, so the fan-out writes at most a quarter of the time. With 1, a
# paced 245,000 deliveries/s took half again as much CPU; with 3, an eighth more, and a busy
# room's p99 fell by a fifth to a third (docs/benchmarks.md).
SPACING = 3
# A busy room's flushes are never further apart than this: a delay no person perceives, which
# cuts a paced 245,000 deliveries/s from one write per delivery to one per ten on a slow host.
BATCH_SECONDS = 0.002
# Join and leave notices wait by the same rule, but for up to this long: 5,000 members joining
# at once then cost each member a few writes, not 5,000 (the benchmark's join took over 120 s
# when they went at once). With a fixed 0.5 s instead, that join took an eighth longer.
PRESENCE_BATCH_SECONDS = 0.5


class Fanout:
    """Flushes `room`'s log to its members. Run `run` in a task; readers call `posted_nowait`."""

    def __init__(self, room: Room) -> None:
        self.room = room
        room.on_append = self._appended
        self._appended_event = trio.Event()
        self._hurry = trio.Event()  # something other than presence, or a flush's worth
        self._last_flush = -math.inf
        self._due = -math.inf  # when a busy room's next flush may start: SPACING after the last
        self._presence_due = -math.inf  # when waiting join and leave notices go
        self._busy = False  # BUSY_POSTS or more messages in the last whole RATE_SECONDS
        self._posts = 0  # messages since `_counting_since`
        self._counting_since = -math.inf

    def _appended(self, posts: int) -> None:
        self._appended_event.set()
        if posts:
            self._count_posts(posts)
            self._hurry.set()
        elif self.room.unflushed() >= PRESENCE_FLUSH_BYTES:
            self._hurry.set()

    def _count_posts(self, posts: int) -> None:
        now = trio.current_time()
        if now - self._counting_since >= RATE_SECONDS:
            # A whole period has passed: it was busy if it had enough (a longer gap: not).
            recent = now - self._counting_since < 2 * RATE_SECONDS
            self._busy = recent and self._posts >= BUSY_POSTS
            self._posts = 0
            self._counting_since = now
        self._posts += posts

    def posted_nowait(self) -> None:
        """A reader has posted: with a flush's worth waiting, flush now rather than later."""
        if self.room.unflushed() >= FLUSH_BYTES:
            self.flush_nowait()

    def flush_nowait(self) -> None:
        """Give every member everything up to the head now (as much as its socket takes)."""
        room = self.room
        self._appended_event = trio.Event()
        self._hurry = trio.Event()
        self._last_flush = trio.current_time()
        batch = SendBatch()  # every member's share first, then the sends back to back
        for member in room.members():
            member.outlet.flush_nowait(batch)
        batch.send_nowait()
        room.flushed_nowait()
        start, end = self._last_flush, trio.current_time()
        spaced = end + SPACING * (end - start)
        self._due = min(start + BATCH_SECONDS, spaced)
        self._presence_due = min(start + PRESENCE_BATCH_SECONDS, spaced)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush whenever something is appended, as the policy above says, until the room has
        closed and its last entry (the shutdown notice) has gone to everyone."""
        task_status.started()
        room = self.room
        while not (room.closed and not room.has_unflushed()):
            await self._appended_event.wait()
            await self._settle()
            if room.has_unflushed():
                self.flush_nowait()
            else:  # a reader flushed it all meanwhile
                self._appended_event = trio.Event()

    async def _settle(self) -> None:
        """Wait as long as the policy says before flushing what was appended."""
        if self.room.presence_only():
            if not self._hurry.is_set():
                with trio.move_on_at(self._presence_due):
                    await self._hurry.wait()
            return
        if self._busy or self._posts >= BUSY_POSTS:
            await trio.sleep_until(self._due)
        else:
            await trio.lowlevel.checkpoint()  # let the rest of this batch post first
