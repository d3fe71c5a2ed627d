"""The room: members, and one append-only log of frames that every member reads from.

A broadcast is encoded once and appended to the log; each member is a cursor into it, and its
writer sends everything from its cursor to the head in one write. That makes fan-out nearly
free, and the log's tail doubles as the history a new member is shown. The room never waits
for anyone: every method is synchronous and returns at once. A member whose cursor falls more
than `outbox_limit` bytes behind is dropped, so one stalled reader cannot hold memory.

No I/O here. The connection layer passes each member a `wake` callback (run when a frame for
that member alone is queued) and a `kick` callback (run when the room drops it); the fan-out
sets `on_append` to hear of every broadcast, and decides when to take everyone's share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..protocol import wire
from ..protocol.errors import ProtocolError
from ..protocol.events import (
    Event,
    Join,
    Leave,
    Members,
    Message,
    MessageId,
    Renamed,
    Shutdown,
    WentAway,
)
from ..protocol.names import check_name, name_key
from ..protocol.sanitize import clean_text
from .entries import Dialect, Entry
from .limits import Limits

# Checking every member's backlog on every post would cost O(members) per message; checking
# once per this many appended bytes bounds the overshoot to this amount instead.
CHECK_EVERY = 8 * 1024
# A send the kernel has not finished in this long is stuck on a reader that is not reading.
SEND_STALL_SECONDS = 0.5
# Trimming the log copies it; doing it only once this many entries are dead keeps it cheap.
TRIM_AFTER = 1024


class Refused(Exception):
    """The room will not do what was asked; `code` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Member:
    """A joined connection as the room sees it."""

    __slots__ = (
        "away",
        "cursor",
        "dialect",
        "end",
        "finish",
        "key",
        "kick",
        "muted_until",
        "name",
        "op",
        "owned",
        "private",
        "queued",
        "renamed_at",
        "sending",
        "source",
        "wake",
    )

    def __init__(
        self,
        name: str,
        key: str,
        *,
        dialect: Dialect,
        wake: Callable[[], None],
        kick: Callable[[str], None],
        finish: Callable[[], None] = lambda: None,
        source: str = "",
    ) -> None:
        self.name = name
        self.key = key
        self.dialect = dialect
        self.wake = wake
        self.kick = kick  # drop it now, sending nothing more (too slow to read)
        self.finish = finish  # close it once what is queued for it is sent (kicked, banned)
        self.source = source  # the address it came from (behind the tunnel too)
        self.op = False  # an operator of the room
        self.away: str | None = None  # why it is away, or None
        self.muted_until: float | None = None  # monotonic; math.inf until unmuted
        self.renamed_at = -math.inf  # monotonic time of its last /nick
        self.cursor = 0  # index of the next log entry this member has not taken
        self.end = 0  # log bytes up to the cursor
        self.owned = -1  # index of the newest log entry that differs for this member
        # Frames for this member alone, each to go out just before the log entry it names.
        self.private: list[tuple[int, bytes]] = []
        self.queued = 0  # bytes in `private`, which count toward the outbox limit too
        self.sending: float | None = None  # since when its socket has refused more


class Room:
    """Members and the log. Every method returns at once."""

    def __init__(
        self,
        name: str = "multichat",
        *,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.limits = limits
        self.closed = False
        self._clock = clock  # for timestamps people read
        self._monotonic = monotonic  # for durations (the server passes trio's clock)
        self._members: dict[str, Member] = {}  # by name key, in join order
        self.topic = ""
        # Whether a name (by key) is kept for the bearer of a personal invite.
        self.reserved: Callable[[str], bool] = lambda key: False
        self._log: list[Entry] = []
        self._base = 0  # index of self._log[0]
        self._base_end = 0  # log bytes before self._log[0]
        self._seq = 0
        # Entries before this index may be read: with a history, only once they are stored.
        self._readable = 0
        self._readable_end = 0
        self._readable_seq = 0
        # Hands every new entry to the history (which calls `stored_nowait`); None: no history.
        self.persist: Callable[[Entry, int], None] | None = None
        self._last_post = -1  # log index of the newest message or notice that is not presence
        self._unchecked = 0
        self._flushed = 0  # the head when the fan-out last gave every member its share
        self._flushed_end = 0
        # The same stretch of the log rendered once per flush: (start, text) -> bytes.
        self._shared: dict[tuple[int, Dialect], bytes] = {}
        self._shared_head = -1
        # Called after every append, with whether the entry is only a join or leave notice.
        self.on_append: Callable[[bool], None] = lambda presence: None
        self.started = clock()

    # -- reading the log (each member's writer) --

    @property
    def head(self) -> int:
        return self._base + len(self._log)

    def _head_end(self) -> int:
        return self._log[-1].end if self._log else self._base_end

    def take_nowait(self, member: Member) -> bytes:
        """Everything that may go to `member` now, and move its cursor on."""
        readable = self._readable
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
        entries = self._log[start - self._base : stop - self._base]
        member.cursor = stop
        member.end = entries[-1].end
        if member.owned < start and stop == self._readable:
            # Nothing in this stretch differs for this member (true of nearly every member):
            # it gets the same bytes as every other member at the same cursor.
            return self._render_shared(start, entries, member.dialect)
        dialect = member.dialect
        if dialect is Dialect.JSON:
            parts = [
                e.json
                if e.owner is not member and e.recipient is not member
                else (e.owner_json if e.owner is member else e.recipient_json)
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
            if dialect is Dialect.JSON:
                data = b"".join(e.json for e in entries)
            else:
                data = b"".join(e.render(dialect) for e in entries)
            self._shared[start, dialect] = data
        return data

    def pending(self, member: Member) -> bool:
        return bool(member.private) or member.cursor < self._readable

    def members(self) -> list[Member]:
        """Every member, in join order (a copy, so waking one may change the room safely)."""
        return list(self._members.values())

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

    @property
    def seq(self) -> int:
        """The newest message number anyone may have seen (for `welcome`, to resume from)."""
        return self._readable_seq

    def stored_nowait(self, index: int) -> None:
        """The history has stored every entry up to log index `index`: they may be read."""
        if index < self._readable:
            return
        entries = self._log[self._readable - self._base : index + 1 - self._base]
        self._readable = index + 1
        self._readable_end = entries[-1].end
        self._readable_seq = entries[-1].seq
        self.on_append(all(isinstance(e.event, Join | Leave) for e in entries))

    def preload(self, events: list[Event], last_seq: int) -> None:
        """Entries from before a restart, already stored: the history newcomers see."""
        persist, self.persist = self.persist, None
        try:
            for event in events:
                self._append(event)
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
            entry = self._log[i - self._base]
            if entry.seq < after or (entry.seq == after and isinstance(entry.event, Message)):
                break
            if isinstance(entry.event, Message):
                if replayed == limit:
                    break
                replayed += 1
            start = i
        return start, max(0, self._readable_seq - after - replayed)

    def _append(self, event: Event, owner: Member | None = None) -> Entry:
        data = wire.encode(event)
        entry = Entry(event, data, self._head_end() + len(data), self._seq)
        if owner is not None:
            entry.owner = owner
            owner.owned = self.head
        return self._add(entry)

    def _add(self, entry: Entry) -> Entry:
        presence = isinstance(entry.event, Join | Leave)
        if not presence:
            self._last_post = self.head
        index = self.head
        self._log.append(entry)
        self._unchecked += len(entry.json)
        if self._unchecked >= CHECK_EVERY:
            self._check_backlogs()
        if self.persist is None:
            self.stored_nowait(index)
        else:
            self.persist(entry, index)
        return entry

    def backlog(self, member: Member) -> int:
        """Bytes queued for `member` that its writer has not taken yet."""
        return self._head_end() - member.end + member.queued

    def _too_slow(self, member: Member) -> bool:
        # Only a member whose socket has refused more for a while is behind because of its
        # reader: one the fan-out simply has not reached yet, or whose sends the kernel takes
        # as fast as they come, is not.
        return (
            member.sending is not None
            and self._monotonic() - member.sending > SEND_STALL_SECONDS
            and self.backlog(member) > self.limits.outbox_bytes
        )

    def _drop_slow(self, member: Member) -> None:
        self.remove(member, "too slow")
        member.kick("too slow: you were not reading fast enough")

    def sweep_nowait(self) -> None:
        """Check every member's backlog now (the server calls this on a timer, so a stalled
        member is dropped even when nothing new is posted)."""
        self._check_backlogs()

    def _check_backlogs(self) -> None:
        """Drop members too far behind, and forget log entries nobody needs any more."""
        self._unchecked = 0
        for member in [m for m in self._members.values() if self._too_slow(m)]:
            self._drop_slow(member)
        oldest = min((m.cursor for m in self._members.values()), default=self.head)
        dead = min(oldest, self.head - self.limits.history_entries) - self._base
        if dead >= TRIM_AFTER:
            self._base_end = self._log[dead - 1].end
            del self._log[:dead]
            self._base += dead

    def check_join(self, name: str, *, invited: bool = False) -> tuple[str, str]:
        """The display name and uniqueness key `name` would join as, or raise Refused.

        A name a personal invite keeps for someone is taken unless `invited` (by that invite).
        """
        if self.closed:
            raise Refused("shutting_down", "the room is closing")
        try:
            display = check_name(name)
        except ProtocolError as exc:
            raise Refused("bad_name", str(exc)) from None
        key = name_key(display)
        if key in self._members or (not invited and self.reserved(key)):
            raise Refused("name_taken", f"the name {display!r} is taken; pick another")
        return display, key

    def join(
        self,
        name: str,
        *,
        dialect: Dialect,
        wake: Callable[[], None],
        kick: Callable[[str], None],
        welcome: Callable[[str, tuple[str, ...]], bytes],
        finish: Callable[[], None] = lambda: None,
        source: str = "",
        invited: bool = False,
        start: int | None = None,
    ) -> Member:
        """Add a member, queue its welcome (built by `welcome(name, members)`), tell the room.

        It reads the log from `start` (see `resume_point`), else from the last
        `history_entries` entries. Raises Refused with `bad_name`, `name_taken` or
        `shutting_down`.
        """
        display, key = self.check_join(name, invited=invited)
        member = Member(
            display, key, dialect=dialect, wake=wake, kick=kick, finish=finish, source=source
        )
        self._members[key] = member
        if start is None:
            start = max(self._base, self._readable - self.limits.history_entries)
        member.cursor = start
        # The history and the welcome do not count toward the outbox: with long pastes in the
        # history, or many members, they can be larger than it.
        member.end = self._head_end()
        member.private.append((start, welcome(display, self.names())))
        # The joiner's own copy of its join notice is empty: its welcome says it all.
        self._append(Join(display, self._clock()), owner=member)
        return member

    def now(self) -> float:
        """The time people read, as the room stamps its entries."""
        return self._clock()

    def monotonic(self) -> float:
        """The room's clock for durations (trio's, in the server)."""
        return self._monotonic()

    def uptime(self) -> float:
        return self._clock() - self.started

    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: Member) -> bool:
        return self._members.get(member.key) is member

    def _checked_text(self, member: Member, text: str) -> str:
        if member not in self:
            raise Refused("not_joined", "you are not in the room")
        if self.closed:
            raise Refused("shutting_down", "the room is closing")
        if len(text) > self.limits.max_text_chars:
            raise Refused(
                "too_long",
                f"message too long ({len(text)} characters; at most {self.limits.max_text_chars})",
            )
        text = clean_text(text)
        if not text.strip():
            raise Refused("empty", "empty message")
        return text

    def post(
        self, member: Member, text: str, id: MessageId | None = None, *, action: bool = False
    ) -> int:
        """Broadcast `text` from `member`; returns its `seq`, or raises Refused."""
        text = self._checked_text(member, text)
        self._seq += 1
        event = Message(self._seq, self._clock(), member.name, text, action=action)
        entry = self._append(event, owner=member)
        # The sender's copy carries its id: that echo is its acknowledgement.
        entry.owner_json = entry.json if id is None else wire.add_id(entry.json, id)
        entry.owner_text = None  # the same line as everyone's, rendered only if needed
        return self._seq

    def send_nowait(self, member: Member, data: bytes) -> None:
        """Queue a frame for `member` alone, after everything already queued for it.

        A member already past its outbox limit is dropped instead: answers it asks for and
        does not read (pongs, member lists) must not pile up without bound either.
        """
        # Answers it asked for and does not read: no grace, they come only from its own asking.
        if (
            member in self
            and member.sending is not None
            and member.queued > self.limits.outbox_bytes
        ):
            self._drop_slow(member)
            return
        member.private.append((self.head, data))
        member.queued += len(data)
        member.wake()

    def post_private(
        self,
        member: Member,
        recipient: Member,
        text: str,
        id: MessageId | None = None,
        *,
        action: bool = False,
    ) -> int:
        """Send `text` to `recipient` alone (and its echo to `member`); raises Refused.

        It takes the next `seq` like any message, so each member's numbers still only grow;
        the others simply never see this one's: for them its log entry is empty.
        """
        text = self._checked_text(member, text)
        self._seq += 1
        event = Message(
            self._seq, self._clock(), member.name, text, to=recipient.name, action=action
        )
        entry = Entry.private(event, self._head_end(), member, recipient, id)
        member.owned = recipient.owned = self.head
        self._add(entry)
        if recipient.away is not None and recipient is not member:
            self.send_event_nowait(member, WentAway(recipient.name, recipient.away))
        return self._seq

    def send_event_nowait(self, member: Member, event: Event) -> None:
        """Queue `event` for `member` alone, in its dialect."""
        entry = Entry(event, wire.encode(event), 0)
        self.send_nowait(member, entry.render(member.dialect))

    def broadcast(self, event: Event) -> None:
        """Append a notice for everyone (a rename, away and back, the topic, moderation)."""
        if not self.closed:
            self._append(event)

    def find(self, name: str) -> Member | None:
        """The member `name` means, as names compare (case, width, look-alikes ignored)."""
        try:
            return self._members.get(name_key(check_name(name)))
        except ProtocolError:
            return None

    def rename(self, member: Member, name: str) -> str:
        """Call `member` `name` from now on and tell the room; the new display form.

        Raises Refused with `bad_name` or `name_taken`; its own name in another case is fine.
        """
        try:
            display = check_name(name)
        except ProtocolError as exc:
            raise Refused("bad_name", str(exc)) from None
        key = name_key(display)
        holder = self._members.get(key)
        if (holder is not None and holder is not member) or (holder is None and self.reserved(key)):
            raise Refused("name_taken", f"the name {display!r} is taken; pick another")
        old = member.name
        # Rebuilt, not re-inserted: the member list keeps its join order.
        self._members = {(key if k == member.key else k): m for k, m in self._members.items()}
        member.name, member.key = display, key
        self.broadcast(Renamed(old, display, self._clock()))
        return display

    def who(self) -> Members:
        members = self._members.values()
        away = tuple((m.name, m.away) for m in members if m.away is not None)
        ops = tuple(m.name for m in members if m.op)
        return Members(self.names(), away, ops)

    def remove(self, member: Member, reason: str) -> None:
        """Take `member` out of the room and tell everyone why; a second call does nothing."""
        if self._members.get(member.key) is not member:
            return
        del self._members[member.key]
        if not self.closed:
            # The leaver's own copy is empty: it may still be flushing its last frames.
            self._append(Leave(member.name, reason, self._clock()), owner=member)

    def close(self, reason: str) -> None:
        """The last entry: everyone gets what was accepted before it, then the notice."""
        if self.closed:
            return
        self.closed = True
        self._append(Shutdown(reason))
