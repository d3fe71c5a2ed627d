"""Logging in: from a visitor's hello (or its answer to the password prompt) to a member; and
a member's move from one room to another.

A visitor shows it may come in: with a personal invite, or with the server's password (a JSON
client in its hello, a plain-text one at the prompt); an address banned from the room it asks
for hears so before any password is checked (or guessed). A visitor that was here before may
resume: the room's history gives what it missed from before the log's tail, and the log the
rest. Then the room's own limits decide: it may be full or locked, and the name may be taken
(plain text is asked again). A hello names its room (none: the default room); plain text
always comes to the default room, and moves with `/join`.

The session calls these with itself; what they answer goes out through its `send_nowait`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..protocol.events import Error, Event, Gap, Message, Notice, Welcome
from ..protocol.state import Mode, State
from .entries import Dialect
from .history import HistoryStore
from .member import Member
from .room import Refused
from .rooms import HostedRoom

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("multichat.server")

# Plain-text mode asks again for a taken name; a person needs a few tries, a script none.
NAME_TRIES = 5
# A member moving to another room first gets what its old room still owes it (the echoes of
# its last lines, which may wait for that room's history); a reader this slow is not reading.
MOVE_FLUSH_SECONDS = 5.0


def check_password(session: Session, attempt: str, hosted: HostedRoom | None = None) -> bool:
    """Whether `attempt` lets the visitor into `hosted` (None: the default room); if not, it
    has been told why."""
    hosted = hosted or session.ctx.rooms.default
    # A banned address hears so before any password is checked (or guessed).
    error = hosted.moderation.banned(session.source) or session.ctx.check_password(
        session.source, attempt, trio.current_time()
    )
    if error is not None:
        session.send_nowait(error)
    return error is None


async def hello(
    session: Session,
    name: str,
    password: str,
    invite: str | None = None,
    since: int | None = None,
    room: str | None = None,
) -> bool:
    """Join the visitor to the room `room` (None: the default room) as `name`, resuming after
    message `since` if given; False when the session is over (refused, or out of tries at a
    name)."""
    ctx = session.ctx
    known = ctx.rooms.get(room)  # before any password: its bans, and whether it can be had
    try:
        ctx.rooms.check(room)
    except Refused as exc:
        session.send_nowait(_error(exc))
        return False
    if invite is not None:
        refusal = (known and known.moderation.banned(session.source)) or ctx.check_invite(
            session.source, invite, name, trio.current_time()
        )
        if refusal is not None:
            session.send_nowait(refusal)
            return False
    elif session.conn.mode is Mode.JSON and not check_password(session, password, known):
        return False
    try:
        # Made now, by a member who showed it may come in, if rooms are open.
        hosted = await ctx.rooms.enter(room, by=name)
    except Refused as exc:
        session.send_nowait(_error(exc))
        return False
    refusal = _refusal(session, hosted)  # a room just opened: its bans came with its history
    if refusal is not None:
        session.send_nowait(refusal)
        return False
    try:
        if hosted.relay is not None:
            member = await _join_relayed(session, hosted, name, since, invited=invite is not None)
        else:
            member = await _join_here(session, hosted, name, since, invited=invite is not None)
    except Refused as exc:
        session.send_nowait(_error(exc))
        session.name_tries += 1
        return session.conn.state is not State.CLOSED and session.name_tries < NAME_TRIES
    session.delivery.room = hosted.room
    session.delivery.joined(member)
    session.authenticated = True
    ctx.gate.authenticated(session.source)
    mode = session.conn.mode.value
    log.info("%s joined from %s (%s), room %r", member.name, session.source, mode, hosted.name)
    return True


async def _join_here(
    session: Session, hosted: HostedRoom, name: str, since: int | None, *, invited: bool
) -> Member:
    """Join a room this server alone serves, resuming from its history and log. Raises
    Refused."""
    ctx = session.ctx
    stored: list[Event] = []
    missed = 0
    if since is not None and hosted.history is not None:
        missed, stored = await _stored_since(hosted.history, session, since, name)
        if stored:
            since = max(e.seq for e in stored if isinstance(e, Message))
    start = None
    if since is not None:
        # Sync from here to the join: nothing can be appended between the two, so what the
        # log still holds after the stored messages follows them, each once.
        start, more = hosted.room.resume_point(since, ctx.limits.resume_max)
        missed += 0 if stored else more
    resumed: list[Event] = [*([Gap(missed)] if missed else []), *stored]
    return _join(session, hosted, name, resumed, invited=invited, start=start)


async def _join_relayed(
    session: Session, hosted: HostedRoom, name: str, since: int | None, *, invited: bool
) -> Member:
    """Join a room served through the backplane: claim the name on every server, resume from
    Redis, then join here, announced by the join entry Redis sends back. Raises Refused."""
    relay = hosted.relay
    assert relay is not None
    display, _ = hosted.room.check_join(name, invited=invited)
    seat = await relay.claim(display)
    try:
        resumed: list[Event] = []
        start = None
        if since is not None:
            missed, events = await relay.replay(since, display, session.ctx.limits.resume_max)
            resumed = [*([Gap(missed)] if missed else []), *events]
            # Sync from here to the join: the log brings everything after the replay.
            start = hosted.room.log.head
        refusal = _refusal(session, hosted)
        if refusal is not None:
            raise Refused(refusal.code, refusal.message)
        member = _join(
            session, hosted, display, resumed, invited=invited, start=start, announce=False
        )
    except BaseException:
        relay.release(seat, "disconnected")
        raise
    relay.seated(member, seat)
    return member


def _error(refused: Refused) -> Error:
    return Error(refused.code, refused.message)


def _refusal(session: Session, hosted: HostedRoom) -> Error | None:
    """Why `hosted` will not take this visitor (or member) now, if it will not."""
    if hosted.room.closed:
        return Error("shutting_down", "the room is closing")
    banned = hosted.moderation.banned(session.source)
    if banned is not None:
        return banned
    if len(hosted.room) >= session.ctx.limits.max_members:
        return Error("room_full", "the room is full; try again later")
    if hosted.moderation.locked:
        return Error("locked", "the room is locked: nobody new can join for now")
    return None


def _join(
    session: Session,
    hosted: HostedRoom,
    name: str,
    resumed: list[Event],
    *,
    invited: bool,
    start: int | None = None,
    announce: bool = True,
) -> Member:
    """`name` into `hosted`'s room; its welcome, then `resumed`, are the first it reads there.
    Sets the session's member and room. Raises Refused."""
    room = hosted.room
    member = room.join(
        name,
        dialect=_dialect(session),
        outlet=session.delivery,
        welcome=lambda display, names: b"".join(
            session.encode(event)
            for event in (
                Welcome(display, room.name, names, topic=room.topic, seq=room.seq),
                *resumed,
            )
        ),
        source=session.source,
        invited=invited,
        start=start,
        announce=announce,
    )
    session.member, session.hosted = member, hosted
    return member


async def move(session: Session, name: str) -> bool:
    """Move the session's member to the room `name` (`join`): the old room sees it leave, the
    new one join, and the member gets the new room's welcome and recent history, after all
    its old room still owed it. A refusal is answered and the member stays where it was.
    False when the session is over."""
    here, member = session.hosted, session.member
    assert here is not None and member is not None
    try:
        there = await session.ctx.rooms.enter(name, by=member.name)
    except Refused as exc:
        session.send_nowait(_error(exc))
        return True
    if session.member is not member or member not in here.room:
        return True  # put out of its room (kicked, the server closing) meanwhile
    if there is here:
        session.send_nowait(Notice(f"you are in {here.name} already", here.room.now()))
        return True
    refusal = _refusal(session, there)
    if refusal is not None:
        session.send_nowait(refusal)
        return True
    # Sync from the leave to the join: the name is never free for anyone else to take. With
    # a backplane, the leave goes to Redis before the join (one queue, in order); if the join
    # is refused even so (Redis went away just then), the member is in no room: it is told
    # why and the connection closes, and the client reconnects.
    here.room.remove(member, f"went to {there.name}")
    try:
        if there.relay is not None:
            moved = await _join_relayed(session, there, member.name, None, invited=True)
        else:
            moved = _join(session, there, member.name, [], invited=True)
    except Refused as exc:  # without a backplane: checked above, and nothing awaited since
        session.send_nowait(_error(exc))
        return False
    moved.away, moved.renamed_at = member.away, member.renamed_at
    log.info("%s went from %s to %s", member.name, here.name, there.name)
    delivery = session.delivery
    try:
        # What the old room owes the old member first (it may wait for that room's history);
        # the new room queues the welcome and what follows meanwhile.
        with trio.move_on_after(MOVE_FLUSH_SECONDS):
            await delivery.send_last()
    finally:
        delivery.room = there.room
        delivery.joined(moved)
    return True


async def _stored_since(
    store: HistoryStore, session: Session, since: int, name: str
) -> tuple[int, list[Event]]:
    """What the history holds after message `since` that `name` may see: how many messages it
    leaves out, and the rest (ending with a message, so no notice comes twice at the seam with
    the log)."""
    limit = session.ctx.limits.resume_max
    missed, entries = await trio.to_thread.run_sync(
        partial(store.since, since, limit, for_name=name)
    )
    events: list[Event] = [e for e in (entry.to_event() for entry in entries) if e]
    while events and not isinstance(events[-1], Message):
        events.pop()
    return missed, events


def _dialect(session: Session) -> Dialect:
    if session.websocket is not None:
        return Dialect.WEBSOCKET
    return Dialect.TEXT if session.conn.mode is Mode.TEXT else Dialect.JSON
