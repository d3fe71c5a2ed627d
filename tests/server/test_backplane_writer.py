"""The backplane's writer against a Redis that answers each APPLY after a set round trip (trio's
autojump clock): a flood of posts goes in fuller batches LINGER_SECONDS apart, each post
waiting at most LINGER_SECONDS, and a room of people talking has each line sent the moment it
is posted.
Against a real Redis, the writer is tested through whole servers (test_backplane.py,
test_backplane_outage.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import trio

from multichat.server.backplane_address import parse_address
from multichat.server.backplane_codec import Keys, Origin, encode_fields
from multichat.server.backplane_link import LINGER_AFTER, LINGER_SECONDS, Link
from multichat.server.backplane_resp import Arg, RespConnection
from multichat.server.backplane_writer import Op, Writer
from multichat.server.history_entries import MESSAGE, StoredEntry

ROOM = "lobby"
ROUND_TRIP = 0.0005
ADDRESS = parse_address("redis://127.0.0.1:6379")


class TimedRedis(RespConnection):
    """Answers every APPLY after ROUND_TRIP with each op appended, as the script would."""

    def __init__(self) -> None:
        super().__init__(ADDRESS, "test-node")
        self.batches: list[tuple[float, int]] = []  # (when sent, how many ops)
        self.sent: dict[int, float] = {}  # each post's publish number: when it was sent
        self._seq = itertools.count(1)

    async def script(
        self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> object:
        now = trio.current_time()
        ops = json.loads(str(args[3]))
        self.batches.append((now, len(ops)))
        for op in ops:
            record = json.loads(op[6][1])  # the op's stream fields: ["d", record]
            self.sent[record[9]] = now
        await trio.sleep(ROUND_TRIP)
        return [["ok", seq, f"{seq}-0"] for seq in itertools.islice(self._seq, len(ops))]


async def post_all(times: Sequence[float]) -> tuple[TimedRedis, list[float]]:
    """Post one line at each of `times` (trio time) through a writer: how long each waited
    to be sent."""
    redis = TimedRedis()
    link = Link(ADDRESS, on_change=lambda up: None)
    link.back(quiet=True)
    writer = Writer(link, node="test-node", keys=Keys(), retention=0, floors={})
    acknowledged = 0
    done = trio.Event()

    def on_done(op: Op) -> None:
        nonlocal acknowledged
        assert op.outcome is not None and op.outcome[0] == "ok"
        acknowledged += 1
        if acknowledged == len(times):
            done.set()

    async def post(k: int, at: float) -> None:
        await trio.sleep_until(at)
        entry = StoredEntry(0, 1_700_000_000.0, MESSAGE, "alice", f"line {k}")
        fields = encode_fields(entry, Origin("test-node", ref=k))
        writer.submit_nowait(Op("P", ROOM, arg1=MESSAGE, fields=fields, ref=k, on_done=on_done))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, redis)
            for k, at in enumerate(times):
                nursery.start_soon(post, k, at)
            await done.wait()
            nursery.cancel_scope.cancel()
    return redis, [redis.sent[k] - at for k, at in enumerate(times)]


async def test_a_flood_goes_in_fuller_batches_each_post_waiting_a_linger_at_most(
    autojump_clock: object,
) -> None:
    start = trio.current_time() + 1
    redis, waited = await post_all([start + k / 5_000 for k in range(5_000)])
    assert sum(n for _, n in redis.batches) == 5_000
    assert max(waited) <= LINGER_SECONDS + ROUND_TRIP + 0.0002
    # Once LINGER_AFTER posts went within LINGER_SECONDS, batches go LINGER_SECONDS apart.
    sent = [when for when, _ in redis.batches]
    busy = next(
        i for i in range(len(sent)) if sum(n for _, n in redis.batches[: i + 1]) >= LINGER_AFTER
    )
    gaps = [b - a for a, b in itertools.pairwise(sent[busy + 1 :])]
    assert min(gaps) >= LINGER_SECONDS - 1e-9
    assert len(redis.batches) <= busy + 1 / LINGER_SECONDS + 2


async def test_a_room_of_people_talking_has_each_line_sent_at_once(autojump_clock: object) -> None:
    start = trio.current_time() + 1
    redis, waited = await post_all([start + k / 100 for k in range(300)])
    assert len(redis.batches) == 300
    assert max(waited) == 0
