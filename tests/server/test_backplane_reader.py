"""The backplane's reader against a stream whose entries arrive at set times (trio's autojump
clock): a flood is read in fewer, fuller reads, each entry waiting at most LINGER_SECONDS, and
a room of people talking is read the moment each line lands. Against a real Redis, the
reader is tested through whole servers (test_backplane.py, test_backplane_outage.py)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import trio

from multichat.server.backplane_address import parse_address
from multichat.server.backplane_codec import BackplaneEntry, Keys, Origin, encode_fields, parse_id
from multichat.server.backplane_link import LINGER_AFTER, LINGER_SECONDS, Link
from multichat.server.backplane_reader import Reader
from multichat.server.history_entries import MESSAGE, StoredEntry

ROOM = "lobby"
KEYS = Keys()


class TimedStream:
    """One room's stream, entry k (k = 1, 2, ...) appended at `arrivals[k - 1]` (trio time),
    answering XREAD as Redis does: what is there at once, else the first entry to come."""

    def __init__(self, arrivals: Sequence[float]) -> None:
        self.arrivals = list(arrivals)
        self.reads: list[tuple[float, int]] = []  # (when asked, entries answered)

    async def call(self, *args: object) -> object:
        assert args[::2][:4] == ("XREAD", 1_000, 5_000, KEYS.log(ROOM))
        assert args[1::2][:3] == ("COUNT", "BLOCK", "STREAMS")
        count, block_ms, position = args[2], args[4], args[-1]
        assert isinstance(count, int) and isinstance(block_ms, int) and isinstance(position, str)
        asked = trio.current_time()
        after = parse_id(position)[0]
        ready = [
            k for k in range(after + 1, len(self.arrivals) + 1) if self.arrivals[k - 1] <= asked
        ]
        if not ready:
            if after >= len(self.arrivals):
                await trio.sleep(block_ms / 1000)
                self.reads.append((asked, 0))
                return None
            await trio.sleep_until(self.arrivals[after])
            ready = [after + 1]
        ready = ready[:count]
        self.reads.append((asked, len(ready)))
        return [[KEYS.log(ROOM), [[f"{k}-0", _fields(k)] for k in ready]]]


def _fields(k: int) -> list[str]:
    entry = StoredEntry(0, 1_700_000_000.0 + k, MESSAGE, "alice", f"line {k}")
    return encode_fields(entry, Origin("another-server"))


async def read_all(stream: TimedStream) -> dict[int, float]:
    """Run a reader on `stream` until it has handed on every entry: when each was handed on."""
    handed: dict[int, float] = {}
    done = trio.Event()

    def on_entries(room: str, entries: Sequence[BackplaneEntry]) -> None:
        assert room == ROOM
        for item in entries:
            assert item.entry.seq == len(handed) + 1  # in order, each once
            handed[item.entry.seq] = trio.current_time()
        if len(handed) == len(stream.arrivals):
            done.set()

    link = Link(parse_address("redis://127.0.0.1:6379"), on_change=lambda up: None)
    link.back(quiet=True)
    reader = Reader(
        link, KEYS, on_entries=on_entries, advance=lambda *_: None, answered=lambda: None
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run, stream)
            reader.watch(ROOM, "0-0")
            await done.wait()
            nursery.cancel_scope.cancel()
    return handed


def waits(stream: TimedStream, handed: dict[int, float]) -> list[float]:
    return [handed[k] - stream.arrivals[k - 1] for k in range(1, len(stream.arrivals) + 1)]


async def test_a_flood_is_read_in_fuller_reads_each_entry_waiting_a_linger_at_most(
    autojump_clock: object,
) -> None:
    start = trio.current_time() + 1
    stream = TimedStream([start + k / 5_000 for k in range(5_000)])  # 5,000 a second for 1 s
    handed = await read_all(stream)
    assert len(handed) == 5_000
    assert max(waits(stream, handed)) <= LINGER_SECONDS + 1e-9
    # Unlingered, a blocked read answers each entry alone: 5,000 reads. Once LINGER_AFTER
    # entries came within LINGER_SECONDS, reads go LINGER_SECONDS apart.
    reads = [(asked, n) for asked, n in stream.reads if n]
    answered = [n for _, n in reads]
    assert answered[:LINGER_AFTER] == [1] * LINGER_AFTER
    times = [asked for asked, _ in reads[LINGER_AFTER:]]
    assert min(b - a for a, b in itertools.pairwise(times)) >= LINGER_SECONDS - 1e-9
    assert len(answered) <= LINGER_AFTER + 1 / LINGER_SECONDS + 1
    assert sum(answered) == 5_000


# (three quarters of the lingering's threshold: 800 lines a second)
@pytest.mark.parametrize("per_second", [100, round(0.75 * LINGER_AFTER / LINGER_SECONDS)])
async def test_a_room_of_people_talking_is_read_the_moment_each_line_lands(
    autojump_clock: object, per_second: int
) -> None:
    start = trio.current_time() + 1
    stream = TimedStream([start + k / per_second for k in range(per_second)])
    handed = await read_all(stream)
    assert max(waits(stream, handed)) == 0


async def test_the_lingering_stops_with_the_flood(autojump_clock: object) -> None:
    start = trio.current_time() + 1
    flood = [start + k / 5_000 for k in range(2_000)]
    stream = TimedStream([*flood, start + 2, start + 2.5])  # then two lone lines
    handed = await read_all(stream)
    assert waits(stream, handed)[-2:] == [0, 0]
