"""The backplane's reader: every open room's stream, from where this server left off, in order.

One task reads every open room with one blocked `XREAD` (one connection, however many rooms),
and hands what comes to `on_entries`, room by room, in stream order. Under load it reads at
most every LINGER_SECONDS, so that each read brings many entries. A room's position moves
on only once its entries are handed on, so after any outage the reader asks again from the
last entry it handed on: nothing skipped, nothing twice. Opening or closing a room cancels the
blocked read, and the reader asks again with the new set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import trio

from .backplane_codec import (
    RECORD_FIELD,
    BackplaneEntry,
    CorruptEntry,
    Keys,
    decode_entry,
    decode_record,
    parse_id,
)
from .backplane_link import (
    COMMAND_SECONDS,
    LINGER_SECONDS,
    LINK_ERRORS,
    READ_BLOCK_SECONDS,
    REFUSALS,
    Backoff,
    Link,
    Pace,
    answer_within,
    describe,
    unless_cancelled,
)
from .backplane_resp import RespConnection

log = logging.getLogger("multichat.backplane")

# A reader takes at most this many entries of a room per read: a server catching up after an
# outage takes each room's backlog in steps of this, so one busy room holds the others back by
# one step at most.
READ_COUNT = 1_000


class Reader:
    """Reads the rooms it is told to `watch`. Run it with `nursery.start(reader.run,
    connection)`, on a connection of its own: its read blocks it."""

    def __init__(
        self,
        link: Link,
        keys: Keys,
        *,
        on_entries: Callable[[str, Sequence[BackplaneEntry]], None],
        advance: Callable[[str, str], None],
        answered: Callable[[], None],
    ) -> None:
        self.link = link
        self.keys = keys
        self.on_entries = on_entries
        self.advance = advance  # the node has seen this room up to this ID (its floor)
        self.answered = answered  # Redis answered a read: maybe it is back
        self.positions: dict[str, str] = {}  # open rooms: the newest stream ID handed on
        self._scope: trio.CancelScope | None = None

    def watch(self, room: str, position: str) -> None:
        """Read `room` from after the stream ID `position` on."""
        self.positions[room] = position
        self._poke()

    def unwatch(self, room: str) -> None:
        if self.positions.pop(room, None) is not None:
            self._poke()

    def _poke(self) -> None:
        # coredis drops the connection of a cancelled blocked read: cheap, as this is rare.
        if self._scope is not None:
            self._scope.cancel()

    async def run(
        self,
        client: RespConnection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        backoff = Backoff()
        never = trio.Event()
        pace = Pace()  # how many entries came lately
        read_at = -math.inf  # when the last read went
        while True:
            if not self.positions:
                with trio.CancelScope() as self._scope:
                    await never.wait()  # until a room opens (`_poke`)
                continue
            if pace.under_load(trio.current_time()):
                await trio.sleep_until(read_at + LINGER_SECONDS)
            read_at = trio.current_time()
            asked = dict(self.positions)
            rooms = {self.keys.log(room): room for room in asked}
            reply, failed = None, False
            with trio.CancelScope() as self._scope:
                try:
                    reply = await answer_within(
                        READ_BLOCK_SECONDS + COMMAND_SECONDS,
                        client.call(
                            "XREAD",
                            "COUNT",
                            READ_COUNT,
                            "BLOCK",
                            int(READ_BLOCK_SECONDS * 1000),
                            "STREAMS",
                            *rooms,
                            *asked.values(),
                        ),
                    )
                except LINK_ERRORS as exc:
                    await unless_cancelled()  # a room opened or closed: read again
                    self.link.lost(exc)
                    failed = True
                except REFUSALS as exc:
                    log.warning("the backplane refused a read: %s", describe(exc))
                    failed = True
            self._scope = None
            if failed:
                await backoff.sleep()
                continue
            backoff.reset()
            if not self.link.up:
                self.answered()
            read = 0
            for key, raw in streams_read(reply):
                room = rooms[key]
                # (closed, or closed and opened again, while the read was out: not these)
                if self.positions.get(room) == asked[room] and raw:
                    self._deliver(room, asked[room], raw)
                    read += len(raw)
            pace.record(trio.current_time(), read)

    def _deliver(self, room: str, after: str, raw: Sequence[object]) -> None:
        entries, newest = decode_stream(raw)
        self.positions[room] = newest
        self.advance(room, newest)
        first = next((e for e in entries if e.is_message), None)
        expected = parse_id(after)[0] + 1
        if first is not None and first.entry.seq > expected:
            log.warning(
                "room %r: messages %d to %d were gone from the backplane before this server read "
                "them (trimmed, or lost by Redis)",
                room,
                expected,
                first.entry.seq - 1,
            )
        if entries:
            self.on_entries(room, entries)


# -- the shapes Redis answers in --


def streams_read(reply: object) -> list[tuple[str, Sequence[object]]]:
    """XREAD's answer, [[stream key, entries], ...] or nil: (key, entries) pairs."""
    if reply is None:
        return []
    return [
        (str(key), sequence(raw)) for key, raw in (sequence(pair, 2) for pair in sequence(reply))
    ]


def decode_stream(raw: Iterable[object]) -> tuple[list[BackplaneEntry], str]:
    """Entries as Redis answers XREAD or XRANGE, [id, [field, value, ...]] oldest first (or
    coredis's StreamEntry tuples), and
    the newest one's ID (entries this version cannot read are skipped, the ID counts them)."""
    entries = []
    newest = ""
    for item in raw:
        # (hiredis's shape taken as it is: `sequence` copies, and this runs for every entry)
        id, flat = item if type(item) is list and len(item) == 2 else sequence(item)[:2]
        newest = id if type(id) is str else str(id)
        if type(flat) is list and len(flat) == 2 and flat[0] == RECORD_FIELD:
            # The one field every entry has (hiredis's shape): every server reads every
            # entry, and the general path's copies were a third of decoding one.
            entry = decode_logged_record(newest, flat[1])
        else:
            # (coredis's XRANGE gives the fields as a dict already)
            fields = flat if isinstance(flat, dict) or flat is None else dict(pairs(sequence(flat)))
            entry = decode_logged(newest, fields)
        if entry is not None:
            entries.append(entry)
    return entries, newest


def decode_script_entries(raw: object) -> list[BackplaneEntry]:
    """Entries as a Lua script returns them from XREVRANGE, [id, [field, value, ...]] newest
    first: oldest first."""
    entries = []
    for item in reversed(sequence(raw)):
        id, flat = sequence(item)[:2]
        entry = decode_logged(str(id), dict(pairs(sequence(flat))))
        if entry is not None:
            entries.append(entry)
    return entries


def decode_logged(id: str, fields: object) -> BackplaneEntry | None:
    """An entry of a stream given as its fields, or None (and a line in the log) if this
    version cannot read it: holding a room back forever for one bad entry would be worse than
    skipping it."""
    try:
        if not isinstance(fields, dict):
            raise CorruptEntry(f"entry {id} is not a set of fields")
        return decode_entry(id, fields)
    except CorruptEntry as exc:
        _skipped(exc)
        return None


def decode_logged_record(id: str, raw: object) -> BackplaneEntry | None:
    """`decode_logged` for an entry given as its record alone (its one field's value)."""
    try:
        return decode_record(id, raw)
    except CorruptEntry as exc:
        _skipped(exc)
        return None


def _skipped(exc: CorruptEntry) -> None:
    log.warning("skipped an entry of the backplane: %s", exc)


def sequence(value: object, length: int | None = None) -> list[object]:
    """`value` as a list (of `length` items), or TypeError: Redis answered something else."""
    if not isinstance(value, list | tuple) or (length is not None and len(value) != length):
        raise TypeError(f"the backplane answered {value!r}")
    return list(value)


def pairs(flat: list[object]) -> list[tuple[str, str]]:
    """A flat [field, value, ...] list, as Lua returns a hash, in pairs."""
    return [(str(flat[k]), str(flat[k + 1])) for k in range(0, len(flat) - 1, 2)]
