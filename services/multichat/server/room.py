"""The room: its members, and everything that changes it, appended to its one log (log.py).

Joining, posting, renaming and leaving each append an entry to the log, which every member
reads from its own cursor; a frame for one member alone is queued with its cursor. The room
never waits for anyone: every method is synchronous and returns at once. A member whose cursor
falls more than `outbox_limit` bytes behind is dropped, so one stalled reader cannot hold memory.

No I/O here. The connection layer passes each member an `Outlet`, its connection: the room has
it flush when a frame for that member alone is queued, and kicks it when it drops the member;
the fan-out sets `on_append` to hear of every broadcast, and decides when to take everyone's
share.
"""

from __future__ import annotations

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
from ..protocol.names import check_name, key_of, name_key
from ..protocol.sanitize import clean_text
from .entries import Dialect, Entry
from .limits import Limits
from .log import Log
from .member import Member, Outlet

# A send the kernel has not finished in this long is stuck on a reader that is not reading.
SEND_STALL_SECONDS = 0.5


class Refused(Exception):
    """The room will not do what was asked; `code` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Room:
    """Members and what changes the room. Every method returns at once."""

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
        # The same keys, to display names: every welcome lists them all, and copying a dict's
        # values is about five times faster than reading each member's name (5,000 joins).
        self._names: dict[str, str] = {}
        self.topic = ""
        # Whether a name (by key) is kept for the bearer of a personal invite.
        self.reserved: Callable[[str], bool] = lambda key: False
        # Whether a name (by key) is in use in another room of the server: names are the
        # server's, not one room's, so nobody is "alice" in two rooms at once (rooms.py).
        self.elsewhere: Callable[[str], bool] = lambda key: False
        # With a backplane (relay.py): the members on the other servers (key -> name), and
        # where leaves and notices go instead of the log: they come back, numbered, from Redis.
        self.remote: dict[str, str] = {}
        # ... which of them are away (key -> why) and operators (keys), for `who`.
        self.remote_away: dict[str, str] = {}
        self.remote_ops: set[str] = set()
        self.on_leave: Callable[[Member, str], None] | None = None
        self.on_broadcast: Callable[[Event], None] | None = None
        # Members' writers take their share from the log itself (`log.take_nowait`): that call
        # runs once per member per flush, millions of times a second, and even an attribute of
        # ours in between measurably slows it.
        self.log = log = Log(on_check=self._check_backlogs)
        # What the fan-out and the history ask of the log, asked of the room: bound here rather
        # than wrapped, so a call costs no frame more.
        self.has_unflushed = log.has_unflushed
        self.unflushed = log.unflushed
        self.presence_only = log.presence_only
        self.flushed_nowait = log.flushed_nowait
        self.stored_nowait = log.stored_nowait
        self.preload = log.preload
        self.resume_point = log.resume_point
        self.started = clock()

    @property
    def seq(self) -> int:
        """The newest message number anyone may have seen (for `welcome`, to resume from)."""
        return self.log.seq

    @property
    def persist(self) -> Callable[[Entry, int], None] | None:
        """Hands every new entry to the history (which calls `stored_nowait`); None: none."""
        return self.log.persist

    @persist.setter
    def persist(self, persist: Callable[[Entry, int], None] | None) -> None:
        self.log.persist = persist

    @property
    def on_append(self) -> Callable[[int], None]:
        """Called as entries become readable, with how many of them are posts, not join and
        leave notices (the fan-out's cue)."""
        return self.log.on_append

    @on_append.setter
    def on_append(self, on_append: Callable[[int], None]) -> None:
        self.log.on_append = on_append

    def members(self) -> list[Member]:
        """Every member, in join order (a copy, so waking one may change the room safely)."""
        return list(self._members.values())

    # -- members too slow to keep up --

    def _too_slow(self, member: Member) -> bool:
        # Only a member whose socket has refused more for a while is behind because of its
        # reader: one the fan-out simply has not reached yet, or whose sends the kernel takes
        # as fast as they come, is not.
        return (
            member.sending is not None
            and self._monotonic() - member.sending > SEND_STALL_SECONDS
            and self.log.backlog(member) > self.limits.outbox_bytes
        )

    def _drop_slow(self, member: Member) -> None:
        if member not in self:
            return  # dropped already, by a check its own leave notice set off
        self.remove(member, "too slow")
        member.outlet.kick("too slow: you were not reading fast enough")

    def sweep_nowait(self) -> None:
        """Check every member's backlog now (the server calls this on a timer, so a stalled
        member is dropped even when nothing new is posted)."""
        self.log.check_nowait()

    def _check_backlogs(self) -> None:
        """The log's `on_check`: drop members too far behind, and have the log forget entries
        nobody needs any more."""
        for member in [m for m in self._members.values() if self._too_slow(m)]:
            self._drop_slow(member)
        log = self.log
        head = log.head
        oldest = min((m.cursor for m in self._members.values()), default=head)
        log.forget_before(min(oldest, head - self.limits.history_entries))

    # -- joining, posting, leaving --

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
        if key in self._members or self.elsewhere(key) or (not invited and self.reserved(key)):
            raise Refused("name_taken", f"the name {display!r} is taken; pick another")
        return display, key

    def join(
        self,
        name: str,
        *,
        dialect: Dialect,
        outlet: Outlet,
        welcome: Callable[[str, tuple[str, ...]], bytes],
        source: str = "",
        invited: bool = False,
        start: int | None = None,
        announce: bool = True,
    ) -> Member:
        """Add a member, queue its welcome (built by `welcome(name, members)`), tell the room.

        It reads the log from `start` (see `resume_point`), else from the last
        `history_entries` entries. Raises Refused with `bad_name`, `name_taken` or
        `shutting_down`. Without `announce`, no join notice: a backplane brings it (relay.py).
        """
        display, key = self.check_join(name, invited=invited)
        member = Member(display, key, dialect=dialect, outlet=outlet, source=source)
        self._members[key] = member
        self._names[key] = display
        log = self.log
        if start is None:
            start = log.start_of_newest(self.limits.history_entries)
        log.add_reader(member, start, welcome(display, self.names()))
        if announce:
            # The joiner's own copy of its join notice is empty: its welcome says it all.
            log.append(Join(display, self._clock()), owner=member)
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
        """Everyone in the room: its members here, then those on other servers (remote)."""
        local = tuple(self._names.values())
        if not self.remote:
            return local
        return local + tuple(name for key, name in self.remote.items() if key not in self._members)

    def __len__(self) -> int:
        return len(self._members)

    def holds(self, key: str) -> bool:
        """Whether a member with the name key `key` is in the room."""
        return key in self._members

    def __contains__(self, member: Member) -> bool:
        return self._members.get(member.key) is member

    def check_text(self, member: Member, text: str) -> str:
        """`text` as `member` may post it (cleaned), or raise Refused."""
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
        text = self.check_text(member, text)
        log = self.log
        seq = log.next_seq()
        # (no id, not private; positional, as StoredEntry.to_event says why)
        self.append_message(
            Message(seq, self._clock(), member.name, text, None, None, action), member, id
        )
        return seq

    def append_message(
        self, message: Message, owner: Member | None = None, id: MessageId | None = None
    ) -> None:
        """Append a public message numbered already; `owner`'s echo carries its `id`."""
        entry = self.log.append(message, owner=owner)
        if owner is not None:
            # The sender's copy carries its id: that echo is its acknowledgement.
            entry.owner_json = entry.json if id is None else wire.add_id(entry.json, id)
            entry.owner_text = None  # the same line as everyone's, rendered only if needed

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
        # Out of the room, it reads nothing appended after it left: its frames go just there.
        position = self.log.head if member.left is None else member.left
        member.private.append((position, data))
        member.queued += len(data)
        member.outlet.flush_nowait()

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
        text = self.check_text(member, text)
        seq = self.log.next_seq()
        event = Message(seq, self._clock(), member.name, text, to=recipient.name, action=action)
        self.log.append_private(event, member, recipient, id)
        if recipient.away is not None and recipient is not member:
            self.send_event_nowait(member, WentAway(recipient.name, recipient.away))
        return seq

    def send_event_nowait(self, member: Member, event: Event) -> None:
        """Queue `event` for `member` alone, in its dialect."""
        entry = Entry(event, wire.encode(event), 0)
        self.send_nowait(member, entry.render(member.dialect))

    def broadcast(self, event: Event) -> None:
        """Append a notice for everyone (a rename, away and back, the topic, moderation)."""
        if self.closed:
            return
        if self.on_broadcast is not None:
            self.on_broadcast(event)
        else:
            self.log.append(event)

    def find(self, name: str) -> Member | None:
        """The member `name` means, as names compare (case, width, look-alikes ignored)."""
        key = key_of(name)
        return None if key is None else self._members.get(key)

    def on_another_server(self, name: str) -> bool:
        """Whether `name` means a member of this room on another server (a backplane's)."""
        return self.remote_name(name) is not None

    def remote_name(self, name: str) -> str | None:
        """The display name of the member of this room on another server that `name` means;
        None if it means nobody there."""
        if not self.remote:
            return None
        key = key_of(name)
        return None if key is None or key in self._members else self.remote.get(key)

    def rename(self, member: Member, name: str, *, announce: bool = True) -> str:
        """Call `member` `name` from now on and tell the room; the new display form.

        Raises Refused with `bad_name` or `name_taken`; its own name in another case is fine.
        """
        try:
            display = check_name(name)
        except ProtocolError as exc:
            raise Refused("bad_name", str(exc)) from None
        key = name_key(display)
        holder = self._members.get(key)
        if (holder is not None and holder is not member) or (
            holder is None and (self.reserved(key) or self.elsewhere(key))
        ):
            raise Refused("name_taken", f"the name {display!r} is taken; pick another")
        old = member.name
        # Rebuilt, not re-inserted: the member list keeps its join order.
        self._members = {(key if k == member.key else k): m for k, m in self._members.items()}
        member.name, member.key = display, key
        self._names = {k: m.name for k, m in self._members.items()}
        if announce:
            self.broadcast(Renamed(old, display, self._clock()))
        return display

    def who(self) -> Members:
        members = self._members.values()
        away = tuple((m.name, m.away) for m in members if m.away is not None)
        ops = tuple(m.name for m in members if m.op)
        if self.remote:
            remote = {k: name for k, name in self.remote.items() if k not in self._members}
            away += tuple((remote[k], why) for k, why in self.remote_away.items() if k in remote)
            ops += tuple(remote[k] for k in self.remote_ops if k in remote)
        return Members(self.names(), away, ops)

    def remove(self, member: Member, reason: str) -> None:
        """Take `member` out of the room and tell everyone why; a second call does nothing."""
        if self._members.get(member.key) is not member:
            return
        del self._members[member.key]
        del self._names[member.key]
        if self.on_leave is not None:
            self.on_leave(member, reason)
        elif not self.closed:
            # The leaver's own copy is empty: it may still be flushing its last frames.
            self.log.append(Leave(member.name, reason, self._clock()), owner=member)
        # What it is still owed (its last echoes, why it was kicked) may wait for the history.
        member.left = self.log.head
        self.log.departed.append(member)

    def close(self, reason: str) -> None:
        """The last entry: everyone gets what was accepted before it, then the notice."""
        if self.closed:
            return
        self.closed = True
        self.log.append(Shutdown(reason))
