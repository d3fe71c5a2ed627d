"""The room's one append-only log of frames, which every member reads from its own cursor.

A broadcast is encoded once and appended; each member is a cursor into the log, and its writer
takes everything from its cursor to the readable head in one write. Members at the same cursor
(nearly all of them) share one rendering of what they are owed, so a flush joins bytes once per
cursor and dialect, not once per member. The log's tail doubles as the history a new member is
shown; entries that every member has read and the history no longer shows are forgotten.

No members and no I/O here: the room owns the members, and the log only moves their cursors.
Three callbacks connect it to the rest: `persist` hands every new entry to the history, which
calls `stored_nowait` once it is stored; `on_append` tells the fan-out of entries that became
readable; `on_check` has the room check its members' backlogs every `CHECK_EVERY` bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..protocol import wire
from ..protocol.events import Event, Join, Leave, Message, MessageId
from .entries import JSON, WEBSOCKET, Dialect, Entry

if TYPE_CHECKING:
    from .member import Member

# Checking every member's backlog on every post would cost O(members) per message; checking
# once per this many appended bytes bounds the overshoot to this amount instead.
CHECK_EVERY = 8 * 1024
# Trimming the log copies it; doing it only once this many entries are dead keeps it cheap.
TRIM_AFTER = 1024
# The entries that are presence, not posts (a type check, read once per entry made readable).
_PRESENCE = frozenset({Join, Leave})


class Log:
    """Entries, the head members may read up to, and each member's share. Never waits."""

    __slots__ = (
        "_base",
        "_base_end",
        "_entries",
        "_flushed",
        "_flushed_end",
        "_held",
        "_last_post",
        "_readable",
        "_readable_end",
        "_readable_seq",
        "_seq",
        "_shared",
        "_shared_head",
        "_unchecked",
        "departed",
        "on_append",
        "on_check",
        "persist",
    )

    def __init__(self, on_check: Callable[[], None]) -> None:
        self._entries: list[Entry] = []
        self._base = 0  # index of self._entries[0]
        self._base_end = 0  # log bytes before self._entries[0]
        self._seq = 0
        # Entries before this index may be read: with a history, only once they are stored.
        self._readable = 0
        self._readable_end = 0
        self._readable_seq = 0
        # Hands every new entry to the history (which calls `stored_nowait`); None: no history.
        self.persist: Callable[[Entry, int], None] | None = None
        self._last_post = -1  # log index of the newest message or notice that is not presence
        self._unchecked = 0
        # Members out of the room still owed frames that wait for the history.
        self.departed: list[Member] = []
        # The room's check of every member's backlog, run every CHECK_EVERY appended bytes.
        self.on_check = on_check
        self._flushed = 0  # the head when the fan-out last gave every member its share
        self._flushed_end = 0
        # The same stretch of the log rendered once per flush: (start, dialect) -> bytes.
        self._shared: dict[tuple[int, Dialect], bytes] = {}
        self._shared_head = -1
        # Called as entries become readable (without a history: at every append), with how
        # many of them are posts (not join and leave notices).
        self.on_append: Callable[[int], None] = lambda posts: None
        self._held = False  # inside `held`: entries become readable at its end

    # -- reading the log (each member's writer) --

    @property
    def head(self) -> int:
        return self._base + len(self._entries)

    def _head_end(self) -> int:
        return self._entries[-1].end if self._entries else self._base_end

    def take_nowait(self, member: Member) -> bytes:
        """Everything that may go to `member` now, and move its cursor on."""
        readable = self._readable if member.left is None else min(self._readable, member.left)
        if not member.private:
            return self._render(member, member.cursor, readable)
        parts = []
        start = member.cursor
        taken = 0
        for position, data in member.private:
            if position > readable:
                break  # after entries still being stored: it waits for them
            parts.append(self._render(member, start, position))
            parts.append(data)
            start = position
            taken += 1
        if taken == len(member.private):
            member.private.clear()
            member.queued = 0
        else:
            del member.private[:taken]
            member.queued = sum(len(data) for _, data in member.private)
        parts.append(self._render(member, start, readable))
        return b"".join(parts)

    def _render(self, member: Member, start: int, stop: int) -> bytes:
        # A member that already left may have had its old entries trimmed; skip them.
        start = max(start, self._base)
        if start >= stop:
            return b""
        entries = self._entries[start - self._base : stop - self._base]
        member.cursor = stop
        member.end = entries[-1].end
        if member.owned < start and stop == self._readable:
            # Nothing in this stretch differs for this member (true of nearly every member):
            # it gets the same bytes as every other member at the same cursor.
            return self._render_shared(start, entries, member.dialect)
        dialect = member.dialect
        if dialect is JSON:
            parts = [
                e.json
                if e.owner is not member and e.recipient is not member
                else (e.owner_json if e.owner is member else e.recipient_json)
                for e in entries
            ]
        elif dialect is WEBSOCKET:
            # The shared frame, where this flush has framed it already: a call per entry
            # cost a WebSocket sender in a burst a tenth of the server's time.
            parts = [
                (e.ws or e.render(dialect))
                if e.owner is not member and e.recipient is not member
                else e.render_for(member, dialect)
                for e in entries
            ]
        else:
            parts = [e.render_for(member, dialect) for e in entries]
        return b"".join(parts)

    def _render_shared(self, start: int, entries: list[Entry], dialect: Dialect) -> bytes:
        if self._shared_head != self._readable:
            self._shared.clear()
            self._shared_head = self._readable
        data = self._shared.get((start, dialect))
        if data is None:
            if dialect is JSON:
                data = b"".join(e.json for e in entries)
            else:
                data = b"".join(e.render(dialect) for e in entries)
            self._shared[start, dialect] = data
        return data

    def pending(self, member: Member) -> bool:
        """Whether `member` is owed something it has not taken (maybe not stored yet)."""
        if member.left is not None:
            return bool(member.private) or member.cursor < member.left
        return bool(member.private) or member.cursor < self._readable

    def forget(self, member: Member) -> None:
        """`member`'s connection is closed: nothing more will be taken for it."""
        if member in self.departed:
            self.departed.remove(member)

    def backlog(self, member: Member) -> int:
        """Bytes queued for `member` that its writer has not taken yet."""
        return self._head_end() - member.end + member.queued

    # -- the fan-out's bookkeeping --

    def has_unflushed(self) -> bool:
        """Whether entries became readable since the last flush (a private message has no
        bytes for most members, yet its two parties are waiting for it)."""
        return self._readable > self._flushed

    def unflushed(self) -> int:
        """Bytes readable since the fan-out last gave every member its share."""
        return self._readable_end - self._flushed_end

    def presence_only(self) -> bool:
        """Whether everything appended since the last flush is join and leave notices."""
        return self._last_post < self._flushed

    def flushed_nowait(self) -> None:
        """The fan-out has just given every member everything readable."""
        self._flushed = self._readable
        self._flushed_end = self._readable_end
        self._shared.clear()

    # -- the history: what is readable, and where a member starts reading --

    @property
    def seq(self) -> int:
        """The newest message number anyone may have seen (for `welcome`, to resume from)."""
        return self._readable_seq

    def stored_nowait(self, index: int) -> None:
        """The history has stored every entry up to log index `index`: they may be read."""
        if index < self._readable:
            return
        posts: int
        if index == self._readable:  # one entry: every append, without a history
            last = self._entries[index - self._base]
            posts = type(last.event) not in _PRESENCE
        else:
            entries = self._entries[self._readable - self._base : index + 1 - self._base]
            last = entries[-1]
            posts = sum(type(e.event) not in _PRESENCE for e in entries)
        self._readable = index + 1
        self._readable_end = last.end
        self._readable_seq = last.seq
        self.on_append(posts)
        if self.departed:
            # Members out of the room are no longer flushed by the fan-out: wake them here.
            for member in list(self.departed):
                member.outlet.flush_nowait()
            self.departed = [m for m in self.departed if self.pending(m)]

    def preload(self, events: list[Event], last_seq: int) -> None:
        """Entries from before a restart, already stored: the history newcomers see."""
        persist, self.persist = self.persist, None
        try:
            for event in events:
                self.append(event)
        finally:
            self.persist = persist
        self._seq = max(self._seq, last_seq)
        self._readable_seq = self._seq

    def resume_point(self, after: int, limit: int) -> tuple[int, int]:
        """Where a member resuming after message `after` starts reading, and how many messages
        since then it misses (those the log has forgotten, and any past the newest `limit`)."""
        start = self._readable
        replayed = 0
        for i in range(self._readable - 1, self._base - 1, -1):
            entry = self._entries[i - self._base]
            if entry.seq < after or (entry.seq == after and isinstance(entry.event, Message)):
                break
            if isinstance(entry.event, Message):
                if replayed == limit:
                    break
                replayed += 1
            start = i
        return start, max(0, self._readable_seq - after - replayed)

    def start_of_newest(self, count: int) -> int:
        """Where a newcomer starts reading to see the newest `count` readable entries."""
        return max(self._base, self._readable - count)

    def add_reader(self, member: Member, start: int, welcome: bytes) -> None:
        """Have `member` read from log index `start`, after `welcome`, a frame for it alone."""
        member.cursor = start
        # The history and the welcome do not count toward the outbox: with long pastes in the
        # history, or many members, they can be larger than it.
        member.end = self._head_end()
        member.private.append((start, welcome))

    # -- appending --

    def carry_seq(self, seq: int) -> None:
        """With a backplane, Redis numbers the entries: what comes next carries `seq`."""
        self._seq = seq

    def next_seq(self) -> int:
        """The number of a new message: each is one more than the last."""
        self._seq += 1
        return self._seq

    def append(self, event: Event, owner: Member | None = None) -> Entry:
        """Append `event` for everyone; `owner`'s own copy is its entry's `owner_json`."""
        data = wire.encode(event)
        entries = self._entries
        end = entries[-1].end if entries else self._base_end  # (_head_end, inlined: per post)
        entry = Entry(event, data, end + len(data), self._seq)
        if owner is not None:
            entry.owner = owner
            owner.owned = self._base + len(entries)
        return self._add(entry)

    def append_private(
        self,
        message: Message,
        sender: Member | None,
        recipient: Member | None,
        id: MessageId | None,
    ) -> None:
        """Append a private message: its two parties see it, everyone else nothing at all.
        With a backplane, a party on another server is None."""
        entry = Entry.private(message, self._head_end(), sender, recipient, id)
        for party in (sender, recipient):
            if party is not None:
                party.owned = self.head
        self._add(entry)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Entries appended inside become readable together at the end (without a history):
        a batch read from the backplane wakes the fan-out once, not once per entry."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
            if self.persist is None and self.head > self._readable:
                self.stored_nowait(self.head - 1)

    def _add(self, entry: Entry) -> Entry:
        index = self.head
        if type(entry.event) not in _PRESENCE:
            self._last_post = index
        self._entries.append(entry)
        # Stored (or readable) before the backlog check: a member it drops appends its leave,
        # which must follow this entry in the history as it does in the log.
        if self.persist is not None:
            self.persist(entry, index)
        elif not self._held:
            self.stored_nowait(index)
        self._unchecked += len(entry.json)
        if self._unchecked >= CHECK_EVERY:
            self.check_nowait()
        return entry

    # -- forgetting --

    def check_nowait(self) -> None:
        """Have the room check every member's backlog now (`on_check`), and count afresh."""
        self._unchecked = 0
        self.on_check()

    def forget_before(self, index: int) -> None:
        """Nobody needs the entries before log index `index` any more: drop them, in bulk."""
        dead = index - self._base
        if dead >= TRIM_AFTER:
            self._base_end = self._entries[dead - 1].end
            del self._entries[:dead]
            self._base += dead
