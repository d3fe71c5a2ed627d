"""The backplane's one way into Redis: every change a server makes goes through one queue.

A member's post, join, rename and leave are each an `Op`; the writer applies them with the
APPLY script (backplane_scripts.py) in the order they were asked for, so a member's last
message is in the stream before its leave, as it is in the room's log today. Batches are
corked the way the history writer's commits are: with no script running, what is queued goes
at once; while one runs, what comes meanwhile waits and goes in the next. A quiet room pays
one round trip, and a busy one one script per batch rather than one per message; under load
(backplane_link.Pace) a batch goes at most every LINGER_SECONDS.

While Redis is away, an op that only makes sense now (a post, a join, a rename) fails at once
with `BackplaneUnavailable`; a leave waits, and goes when Redis is back: the other servers
must see the member go, and leaving twice is harmless (the second finds no seat).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import trio

from .backplane_codec import Keys, pack, parse_id
from .backplane_errors import BackplaneUnavailable
from .backplane_link import (
    COMMAND_SECONDS,
    LINGER_SECONDS,
    LINK_ERRORS,
    REFUSALS,
    Backoff,
    Link,
    Pace,
    RedisClient,
    answer_within,
    describe,
    unless_cancelled,
)
from .backplane_resp import RespConnection
from .backplane_scripts import APPLY, apply_script

log = logging.getLogger("multichat.backplane")

# Redis runs one script at a time and nothing else meanwhile; at about 10 us an operation,
# this many keep a batch within a couple of milliseconds of Redis's time (its own latency
# monitor flags anything over 100 ms as an event worth reporting).
MAX_BATCH = 128

# What an op came to: its status ('ok', 'dup', 'taken', 'gone', 'alive'), the room's seq
# after it (for 'dup', the seq of the post it repeats), and the stream ID of the entry it
# appended ("" for none).
Outcome = tuple[str, int, str]
# A post whose id its seat posted already is a success: the first one's echo is its echo.
DONE = frozenset({"ok", "dup"})
# The ids of a seat's posts Redis remembers: every line a member can have on its way
# (relay.PUBLISH_WINDOW, 32) twice over, for an hour after its last post (a line is resent
# within seconds of Redis coming back; a seat that posts nothing for an hour has left).
POSTED_KEEP = 64
POSTED_SECONDS = 3600


class Op:
    """One operation of the APPLY script (its docstring lists the kinds)."""

    __slots__ = (
        "abandoned",
        "arg1",
        "arg2",
        "dedupe",
        "error",
        "fields",
        "finished",
        "key",
        "kind",
        "on_done",
        "outcome",
        "ref",
        "retry",
        "room",
        "sent",
        "token",
    )

    def __init__(
        self,
        kind: str,
        room: str,
        *,
        key: str = "",
        token: str = "",
        arg1: str = "",
        arg2: str = "",
        fields: Sequence[str] = (),
        retry: bool = False,
        ref: int = 0,
        dedupe: str = "",
        on_done: Callable[[Op], None] | None = None,
    ) -> None:
        self.kind = kind
        self.room = room
        self.key = key
        self.token = token
        self.arg1 = arg1
        self.arg2 = arg2
        self.fields = fields
        self.retry = retry  # kept until Redis takes it (a leave), instead of failing
        self.ref = ref
        # A post's client message id (typed: `n42`, `s42`): posted twice by one seat, the
        # second is not appended ('dup'), so a line resent after "it may have gone through"
        # appears once.
        self.dedupe = dedupe
        # Run by the writer as soon as the op is done with (its outcome, or its error), whether
        # or not anyone waits for it: the backplane keeps its seats up to date there, and a
        # post nobody waits for (`Backplane.publish_nowait`) reports back through it.
        self.on_done = on_done
        self.outcome: Outcome | None = None
        self.error: BackplaneUnavailable | None = None
        self.sent = False
        self.abandoned = False  # whoever asked stopped waiting after it was sent
        # Made only for an op someone waits for (`Writer.apply`): most posts nobody does.
        self.finished: trio.Event | None = None

    def finish(
        self, outcome: Outcome | None = None, error: BackplaneUnavailable | None = None
    ) -> None:
        """Done with: `outcome` if it ran, else `error`."""
        self.outcome = outcome
        self.error = error
        if self.on_done is not None:
            self.on_done(self)
        if self.finished is not None:
            self.finished.set()


def script_call(
    ops: Sequence[Op],
    *,
    node: str,
    keys: Keys,
    retention: int,
    floors: Mapping[str, tuple[int, int]],
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one APPLY run of `ops`, as `node` (whose seats they change)."""
    rooms: dict[str, int] = {}
    for op in ops:
        rooms.setdefault(op.room, len(rooms) + 1)
    key_list = [keys.names, keys.seats(node), keys.nodes]
    floor_list = []
    for room in rooms:
        key_list += [keys.log(room), keys.meta(room), keys.members(room)]
        floor_list.append([room, *floors.get(room, (0, 0))])
    op_list = []
    seats: dict[tuple[str, str], int] = {}  # each seat's `posted` set, once however many posts
    for op in ops:
        posted = 0
        if op.dedupe:
            posted = seats.get((op.room, op.token), 0)
            if not posted:
                key_list.append(keys.posted(op.room, op.token))
                posted = seats[op.room, op.token] = len(key_list)
        row = [op.kind, rooms[op.room], op.key, op.token, op.arg1, op.arg2, op.fields]
        op_list.append([*row, posted, op.dedupe] if posted else row)
    argv = [node, str(retention), pack(floor_list), pack(op_list)]
    argv += [str(POSTED_KEEP), str(POSTED_SECONDS)]
    return key_list, argv


def parse_outcomes(reply: object, count: int) -> list[Outcome]:
    """The APPLY script's answer, checked: one (status, seq, id) per op."""
    if not isinstance(reply, list | tuple) or len(reply) != count:
        raise TypeError(f"APPLY answered {reply!r} for {count} operations")
    outcomes = []
    for item in reply:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise TypeError(f"APPLY answered {item!r} for an operation")
        status, seq, id = item
        if not isinstance(status, str) or not isinstance(seq, int) or not isinstance(id, str):
            raise TypeError(f"APPLY answered {item!r} for an operation")
        outcomes.append((status, seq, id))
    return outcomes


async def apply_ops(
    client: RedisClient | RespConnection,
    ops: Sequence[Op],
    *,
    node: str,
    keys: Keys,
    retention: int,
    floors: Mapping[str, tuple[int, int]],
) -> list[Outcome]:
    """Run `ops` in one APPLY script; raises LINK_ERRORS and REFUSALS."""
    key_list, argv = script_call(ops, node=node, keys=keys, retention=retention, floors=floors)
    reply: object
    if isinstance(client, RespConnection):
        reply = await answer_within(
            COMMAND_SECONDS, client.script(apply_script.sha, APPLY, key_list, argv)
        )
    else:
        reply = await apply_script(keys=key_list, args=argv, client=client)
    return parse_outcomes(reply, len(ops))


class Writer:
    """Applies this node's ops in order, in batches. Run it with `nursery.start(writer.run,
    connection)`; `apply` waits for an op's outcome, `submit_nowait` does not."""

    def __init__(
        self,
        link: Link,
        *,
        node: str,
        keys: Keys,
        retention: int,
        floors: dict[str, tuple[int, int]],
    ) -> None:
        self.link = link
        self.node = node
        self.keys = keys
        self.retention = retention
        # The newest stream ID this node knows of each room (shared with the reader): the
        # scripts never number a room's entries behind it.
        self.floors = floors
        self._queue: deque[Op] = deque()
        self._wakeup = trio.Event()
        self._in_flight = 0
        self._progress = trio.Event()  # set (and replaced) whenever ops are done with
        self._pace = Pace()  # how many ops went lately, and when the next batch may go
        self._linger_until = -math.inf

    def submit_nowait(self, op: Op) -> None:
        """Queue `op`; raises BackplaneUnavailable at once while Redis is away, unless it is
        an op to retry (a leave)."""
        if not op.retry:
            self.link.check(op.ref)
        self._queue.append(op)
        self._wakeup.set()

    async def apply(self, op: Op) -> Outcome:
        """Queue `op` and wait for its outcome; raises BackplaneUnavailable. Cancelled before
        it is sent, it is never sent; after, it runs to its end all the same."""
        op.finished = finished = trio.Event()
        self.submit_nowait(op)
        try:
            await finished.wait()
        except BaseException:
            if op.sent:
                op.abandoned = True
            elif op in self._queue:
                self._queue.remove(op)
            raise
        if op.error is not None:
            raise op.error
        assert op.outcome is not None
        return op.outcome

    def queued_tokens(self) -> set[str]:
        """The members with an op waiting (a leave, while Redis is away)."""
        return {op.token for op in self._queue}

    async def flush(self) -> None:
        """Wait until every op queued so far is done with (applied, or failed)."""
        while self._queue or self._in_flight:
            await self._progress.wait()

    async def run(
        self,
        client: RespConnection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        backoff = Backoff()
        while True:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
            elif not self.link.up:
                self._fail_queued("the backplane is unreachable: " + self.link.reason)
                if self._queue:
                    await self.link.wait_up()  # only leaves are left: they go when it is back
            elif (now := trio.current_time()) < self._linger_until and self._pace.under_load(now):
                await trio.sleep_until(self._linger_until)
            elif await self._apply_batch(client):
                backoff.reset()
            else:
                await backoff.sleep()

    async def _apply_batch(self, client: RespConnection) -> bool:
        """Apply the next batch; False if Redis refused it (the link stays up: not so fast
        again) or was lost."""
        batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
        now = trio.current_time()
        self._pace.record(now, len(batch))
        self._linger_until = now + LINGER_SECONDS
        for op in batch:
            op.sent = True
        self._in_flight = len(batch)
        try:
            outcomes = await apply_ops(
                client,
                batch,
                node=self.node,
                keys=self.keys,
                retention=self.retention,
                floors=self.floors,
            )
        except LINK_ERRORS as exc:
            self._failed(batch, describe(exc))
            await unless_cancelled()
            self.link.lost(exc)
            return False
        except REFUSALS as exc:
            log.warning("the backplane refused %d operations: %s", len(batch), describe(exc))
            self._failed(batch, describe(exc))
            return False
        finally:
            self._in_flight = 0
            self._progressed()
        # An outcome's ID is always one the batch appended, in order: each room's last is its
        # newest (parsed once a batch, not once an op).
        done = list(zip(batch, outcomes, strict=True))
        newest = {op.room: outcome[2] for op, outcome in done if outcome[2]}
        for room, id in newest.items():
            self.advance(room, id)
        for op, outcome in done:
            op.finish(outcome)
        return True

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def advance(self, room: str, id: str) -> None:
        """The node has seen `room`'s stream up to `id`: never number behind it."""
        position = parse_id(id)
        if position > self.floors.get(room, (0, 0)):
            self.floors[room] = position

    def _failed(self, batch: list[Op], reason: str) -> None:
        """A batch that may or may not have run: leaves go again, the rest fail."""
        for op in reversed(batch):
            if op.retry:
                op.sent = False
                self._queue.appendleft(op)
        for op in batch:
            if not op.retry:
                op.finish(
                    error=BackplaneUnavailable(
                        f"the backplane did not answer: {reason}", maybe_published=True, ref=op.ref
                    )
                )

    def _fail_queued(self, reason: str) -> None:
        kept: deque[Op] = deque()
        for op in self._queue:
            if op.retry:
                kept.append(op)
            else:
                op.finish(error=BackplaneUnavailable(reason, ref=op.ref))
        self._queue = kept
        self._progressed()
