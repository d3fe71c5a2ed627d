"""A room served through the backplane: one `HostedRoom` whose log is fed by Redis.

Without a backplane, a room's log is appended to by the room itself (room.py). With one, every
change goes to Redis first (`Backplane.publish`, `join`, `rename`, `leave_nowait`), and the
room's log is fed, in the stream's order and with the stream's numbering, by what every server
reads back (`receive`): members here get the entries of members anywhere from the fan-out they
have today. A message from a member here comes back as its echo, with the client's `id`, found
by its origin (this server's node id and the member's token): the echo is the acknowledgement,
so an echo means the message is in Redis. The members of other servers are kept in
`Room.remote`, from the room's snapshot and from the join, leave and rename entries, so `who`,
`members` and the welcome list everyone on every server.

The room stays synchronous: what must wait for Redis (a join, a rename) waits here, in the
member's own session task, and a leave or a notice never waits (`Room.on_leave`,
`Room.on_broadcast` hand them to the backplane). A member's public lines are pipelined: the
session goes on reading while up to `PUBLISH_WINDOW` of them are on their way, since waiting a
round trip per line held a fast sender to one line per round trip and left Redis a few lines
per script. Redis away: `unavailable`, and the member stays connected.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from ..protocol.errors import ProtocolError
from ..protocol.events import (
    BanEntry,
    CameBack,
    Error,
    Event,
    Message,
    MessageId,
    Moderate,
    Nick,
    Notice,
    Say,
    Topic,
    WentAway,
)
from ..protocol.names import check_name, name_key
from .backplane_codec import BackplaneEntry, Seat, parse_id
from .backplane_errors import BackplaneUnavailable, NameTaken, NotJoined
from .entries import Entry
from .history_entries import (
    JOIN,
    LEAVE,
    MESSAGE,
    MODERATE,
    TOPIC,
    StoredEntry,
)
from .member import Member
from .remote_members import TRACKED, track, track_operators
from .room import Refused, Room

if TYPE_CHECKING:  # only a server with a backplane loads it, and Redis's client (coredis)
    from .backplane import Backplane

log = logging.getLogger("multichat.server")

# What a member is told when Redis does not answer: the client keeps the line and resends it.
UNAVAILABLE = "the chat backplane is unreachable for now; your line was not sent, send it again"


# ... and what a visitor is told when its hello cannot be carried out.
UNAVAILABLE_JOIN = "the chat backplane is unreachable for now; try again in a moment"


# Public lines a member may have on their way to Redis before its session waits for the oldest:
# at a millisecond's round trip, 32 carry 32,000 lines a second, far above any flood limit,
# while a Redis that stalls holds at most this many of a member's lines (Kafka's producer
# stops at 5 requests in flight per connection; its requests are batches of many records).
PUBLISH_WINDOW = 32


def _unavailable(exc: BackplaneUnavailable) -> Error:
    if exc.maybe_published:
        return Error("unavailable", f"{UNAVAILABLE} (it may have gone through: wait for its echo)")
    return Error("unavailable", UNAVAILABLE)


def _refusal(exc: BackplaneUnavailable | NotJoined) -> Error:
    if isinstance(exc, NotJoined):
        return Error("not_joined", "you are no longer in the room; join again")
    return _unavailable(exc)


class Relay:
    """`room` (its key `key`) as one of the rooms every server of `backplane` serves."""

    def __init__(self, room: Room, key: str, backplane: Backplane) -> None:
        self.room = room
        self.key = key
        self.backplane = backplane
        self.position = "0-0"  # the stream ID of the newest entry in the room's log
        self._seats: dict[Member, Seat] = {}
        self._by_token: dict[str, Member] = {}
        # Joins of this server read back before their member was seated (the reader can be
        # quicker than the joining session): by token, the log entry and its index.
        self._early: dict[str, tuple[Entry, int]] = {}
        # Each member's public lines on their way to Redis, and whoever waits for fewer.
        self._unacked: dict[Member, int] = {}
        self._window: dict[Member, trio.Event] = {}
        self._open = False  # loaded from Redis: notices may go
        # Carries out a moderation command another server handed on (Moderation.apply), takes
        # the room's bans, lock and mutes as Redis keeps them, on opening (Moderation.restore),
        # and moves a mute along when a member of another server renames (Moderation.renamed).
        self.on_moderate: Callable[[str, Moderate, str], None] = lambda actor, command, name: None
        self.on_restore: Callable[[list[BanEntry], bool, dict[str, float | None]], None] = (
            lambda bans, locked, mutes: None
        )
        self.on_renamed: Callable[[str, str], None] = lambda old, new: None

    # -- opening, and reading what every server appends --

    async def open(self) -> None:
        """Load the room from Redis (its newest entries, members and topic) and read on from
        there. Raises BackplaneError."""
        room = self.room
        snapshot = await self.backplane.open_room(self.key, history=room.limits.history_entries)
        for entry in snapshot.entries:
            self._append(entry, bookkeeping=False)
            if entry.entry.type == MODERATE:
                track_operators(room, entry.entry)
        self.on_restore(snapshot.bans, snapshot.locked, snapshot.mutes)
        room.log.carry_seq(snapshot.seq)
        room.preload([], snapshot.seq)
        node = self.backplane.node_id
        room.remote = {m.key: m.name for m in snapshot.members if m.node != node}
        room.topic = snapshot.topic
        self.position = snapshot.position
        self._open = True
        room.on_leave = self._left
        room.on_broadcast = self._broadcast

    def receive(self, entries: Sequence[BackplaneEntry]) -> None:
        """The backplane's `on_entries` for this room: append them to the log, in order, and
        make them readable together (one wake-up of the fan-out for a read)."""
        with self.room.log.held():
            for entry in entries:
                self.position = entry.id
                self._append(entry)

    def _append(self, item: BackplaneEntry, *, bookkeeping: bool = True) -> None:
        room, entry, origin = self.room, item.entry, item.origin
        room.log.carry_seq(entry.seq)
        mine = origin.node == self.backplane.node_id
        owner = self._by_token.get(origin.member) if mine and origin.member else None
        kind = entry.type
        # A leave may come from any server: a dead server's members are made to leave by
        # whichever server reaps them, this one included.
        if bookkeeping and kind in TRACKED and (not mine or kind == LEAVE):
            renamed = track(room, entry)
            if renamed is not None:
                self.on_renamed(*renamed)
        if room.closed:
            return  # the shutdown notice is the last entry
        if kind == MESSAGE:
            message = entry.to_event()
            assert isinstance(message, Message)
            if entry.recipient is None:
                room.append_message(message, owner, origin.id)
                return
            recipient = room.find(entry.recipient)
            if owner is not None or recipient is not None:
                room.log.append_private(message, owner, recipient, origin.id)
                if owner is not None and recipient is not None and recipient.away is not None:
                    room.send_event_nowait(owner, WentAway(recipient.name, recipient.away))
            return
        if kind == MODERATE:
            if bookkeeping:
                track_operators(room, entry)
                if not mine:
                    self._moderate(entry)
            return
        if kind == TOPIC:
            room.topic = entry.text
        event = entry.to_event()
        if event is None:
            return
        # A joiner's own copy of its join notice is empty, as without a backplane.
        appended = room.log.append(event, owner=owner if kind == JOIN else None)
        if kind == JOIN and mine and owner is None and origin.member:
            self._early[origin.member] = (appended, room.log.head - 1)
        elif kind == LEAVE and mine:
            self._early.pop(origin.member, None)

    def _moderate(self, entry: StoredEntry) -> None:
        extra = entry.extra or {}
        target, reason, seconds = extra.get("target"), extra.get("reason"), extra.get("seconds")
        if not (isinstance(target, str) and isinstance(reason, str)):
            log.warning("a moderation entry of the backplane is damaged: %r", entry)
            return
        if seconds is not None and (type(seconds) not in (int, float) or seconds <= 0):
            seconds = None
        name = extra.get("name")
        name = name if isinstance(name, str) else ""
        self.on_moderate(entry.sender, Moderate(entry.text, target, reason, seconds), name)

    def share_moderation(self, actor: str, command: Moderate, name: str = "") -> None:
        """Moderation's `on_shared`: hand `command` to every other server, through Redis
        (`name`: the member a ban by address was made for)."""
        extra: dict[str, object] = {
            "target": command.target,
            "reason": command.reason,
            "seconds": command.seconds,
        }
        if name:
            extra["name"] = name
        entry = StoredEntry(0, self.room.now(), MODERATE, actor, command.command, None, extra)
        if self._open:
            self._publish_notice(entry)

    # -- members of this server --

    async def claim(self, name: str) -> Seat:
        """Claim `name` (checked already) on every server. Raises Refused: `name_taken`,
        `unavailable`."""
        try:
            return await self.backplane.seats.join(self.key, name)
        except NameTaken:
            raise Refused("name_taken", f"the name {name!r} is taken; pick another") from None
        except BackplaneUnavailable:
            raise Refused("unavailable", UNAVAILABLE_JOIN) from None

    def seated(self, member: Member, seat: Seat) -> None:
        """`member` joined the room here with `seat` (from `claim`)."""
        self._seats[member] = seat
        self._by_token[seat.token] = member
        early = self._early.pop(seat.token, None)
        if early is not None:
            entry, index = early
            entry.owner = member
            member.owned = max(member.owned, index)

    def release(self, seat: Seat, reason: str) -> None:
        """A seat claimed for a member that did not join after all."""
        self.backplane.seats.leave_nowait(seat, reason)

    async def replay(self, after: int, name: str, limit: int) -> tuple[int, list[Event]]:
        """What a member resuming after message `after` missed, from Redis, up to the room's
        log here: how many messages it leaves out, and the events. Join it right after this
        returns, reading from the log's head: nothing twice, nothing missed at the seam."""
        try:
            replay = await self.backplane.since(self.key, after, limit)
        except BackplaneUnavailable:
            raise Refused("unavailable", UNAVAILABLE_JOIN) from None
        upto = parse_id(self.position)
        events: list[Event] = []
        for item in replay.entries:
            if parse_id(item.id) > upto:
                break  # the log here brings it
            if item.entry.visible_to(name):
                event = item.entry.to_event()
                if event is not None:
                    events.append(event)
        return replay.missed, events

    def availability(self, up: bool) -> None:
        """The backplane's `on_availability`: tell this server's members, once each way (a
        notice of this server's alone: Redis cannot carry it)."""
        if self.room.closed or not self._open:
            return
        if up:
            text = "The chat backplane is back: lines go through again."
        else:
            text = "The chat backplane is unreachable: lines are refused until it is back."
        self.room.log.append(Notice(text, self.room.now()))

    def _left(self, member: Member, reason: str) -> None:
        """The room's `on_leave`: its leave notice comes back from Redis."""
        seat = self._seats.pop(member, None)
        if seat is not None:
            self._by_token.pop(seat.token, None)
            self.backplane.seats.leave_nowait(seat, reason)

    def seats_lost(self, seats: Sequence[Seat]) -> None:
        """The backplane no longer has these members (this server was taken for dead, or
        Redis lost its data): the others saw them leave; close their connections."""
        for seat in seats:
            member = self._by_token.pop(seat.token, None)
            if member is None or member not in self.room:
                continue
            self._seats.pop(member, None)
            self.room.send_event_nowait(
                member,
                Error(
                    "seat_lost",
                    "this server lost touch with the others, which saw you leave; join again",
                ),
            )
            self.room.remove(member, "server lost")
            member.outlet.finish_nowait()

    # -- what members ask --

    def in_flight(self) -> int:
        """How many of this room's public lines are on their way to Redis."""
        return sum(self._unacked.values())

    async def say(
        self, member: Member, text: str, id: MessageId | None, action: bool
    ) -> Error | None:
        """Post `text` from `member` through Redis: its echo comes back with the others', and
        a refusal Redis gives later is sent to the member as an `error` with `id`. Waits only
        while `PUBLISH_WINDOW` of the member's lines are on their way."""
        while self._unacked.get(member, 0) >= PUBLISH_WINDOW:
            await self._window.setdefault(member, trio.Event()).wait()
        try:
            text = self.room.check_text(member, text)
        except Refused as exc:
            return Error(exc.code, exc.message)
        seat = self._seats.get(member)
        if seat is None:
            return Error("not_joined", "you are not in the room")
        entry = StoredEntry(
            0,
            self.room.now(),
            MESSAGE,
            member.name,
            text,
            None,
            {"action": True} if action else None,
        )

        def done(exc: BackplaneUnavailable | NotJoined | None) -> None:
            left = self._unacked[member] - 1
            if left:
                self._unacked[member] = left
            else:
                del self._unacked[member]
            waiting = self._window.pop(member, None)
            if waiting is not None:
                waiting.set()
            if exc is not None and member in self.room:
                self.room.send_event_nowait(member, dataclasses.replace(_refusal(exc), id=id))

        try:
            self.backplane.seats.publish_nowait(self.key, entry, seat=seat, id=id, on_done=done)
        except (BackplaneUnavailable, NotJoined) as exc:
            return _refusal(exc)
        self._unacked[member] = self._unacked.get(member, 0) + 1
        return None

    async def _publish(
        self, member: Member, entry: StoredEntry, id: MessageId | None
    ) -> Error | None:
        seat = self._seats.get(member)
        if seat is None:
            return Error("not_joined", "you are not in the room")
        try:
            await self.backplane.seats.publish(self.key, entry, seat=seat, id=id)
        except (BackplaneUnavailable, NotJoined) as exc:
            return _refusal(exc)
        return None

    def handles(self, request: object) -> bool:
        """Whether `answer` (not chat.py) carries out `request`: renames and private messages
        go through Redis."""
        return isinstance(request, Nick) or (isinstance(request, Say) and request.to is not None)

    async def answer(self, member: Member, request: Nick | Say, wait: float) -> Error | None:
        """Carry out what `handles` took (`wait`: seconds before `member` may rename)."""
        room = self.room
        match request:
            case Nick(name):
                if wait > 0:
                    return Error("too_fast", f"one new name per 10 s; wait {wait:.0f} s")
                return await self._rename(member, name)
            case Say(text, id, to, action):
                assert to is not None
                recipient = room.find(to)
                to_name = recipient.name if recipient else room.remote_name(to)
                if to_name is None:
                    return Error("no_such_member", f"nobody called {to!r} is in the room")
                try:
                    text = room.check_text(member, text)
                except Refused as exc:
                    return Error(exc.code, exc.message)
                extra = {"action": True} if action else None
                entry = StoredEntry(0, room.now(), MESSAGE, member.name, text, to_name, extra)
                return await self._publish(member, entry, id)
        return None

    async def _rename(self, member: Member, name: str) -> Error | None:
        room = self.room
        try:
            display = check_name(name)
        except ProtocolError as exc:
            return Error("bad_name", str(exc))
        key = name_key(display)
        if key != member.key and (room.reserved(key) or room.elsewhere(key)):
            return Error("name_taken", f"the name {display!r} is taken; pick another")
        seat = self._seats.get(member)
        if seat is None:
            return Error("not_joined", "you are not in the room")
        try:
            renamed = await self.backplane.seats.rename(seat, display)
        except NameTaken:
            return Error("name_taken", f"the name {display!r} is taken; pick another")
        except BackplaneUnavailable as exc:
            return _unavailable(exc)
        except NotJoined:
            return Error("not_joined", "you are no longer in the room; join again")
        if member in room:
            self._seats[member] = renamed
            try:
                room.rename(member, display, announce=False)
            except Refused as exc:  # taken here meanwhile, by a name reserved for an invite
                return Error(exc.code, exc.message)
        return None

    async def notify(self, member: Member, event: Topic | WentAway | CameBack) -> Error | None:
        """Publish `member`'s topic, away or back; it takes effect when it comes back."""
        return await self._publish(
            member, StoredEntry.from_event(event, seq=0, ts=self.room.now()), None
        )

    def _broadcast(self, event: Event) -> None:
        """The room's `on_broadcast`: a notice (the topic, away and back, moderation) goes
        through Redis like a message, and appears when it comes back."""
        if not isinstance(event, Topic | Notice | WentAway | CameBack):
            self.room.log.append(event)  # nothing Redis keeps: this server's alone
            return
        entry = StoredEntry.from_event(event, seq=0, ts=self.room.now())
        if self._open:
            self._publish_notice(entry)

    def _publish_notice(self, entry: StoredEntry) -> None:
        """Publish a notice of this server's (a topic, away, moderation) in the order made."""
        try:
            self.backplane.seats.publish_nowait(self.key, entry, on_done=self._notice_landed)
        except (BackplaneUnavailable, NotJoined) as exc:
            self._notice_landed(exc)

    def _notice_landed(self, exc: BackplaneUnavailable | NotJoined | None) -> None:
        if exc is not None:
            log.warning("a notice in %s was not sent: %s", self.room.name, exc)
