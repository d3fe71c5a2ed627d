"""Logging in: from a visitor's hello (or its answer to the password prompt) to a member.

A visitor shows it may come in: with a personal invite, or with the room's password (a JSON
client in its hello, a plain-text one at the prompt); a banned address hears so before any
password is checked (or guessed). A visitor that was here before may resume: the history gives
what it missed from before the log's tail, and the log the rest. Then the room's own limits
decide: it may be full or locked, and the name may be taken (plain text is asked again).

The session calls these with itself; what they answer goes out through its `send_nowait`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..protocol.events import Error, Event, Gap, Message, Welcome
from ..protocol.state import Mode, State
from .context import ServerContext
from .entries import Dialect
from .room import Refused

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("multichat.server")

# Plain-text mode asks again for a taken name; a person needs a few tries, a script none.
NAME_TRIES = 5


def check_password(session: Session, attempt: str) -> bool:
    """Whether `attempt` lets the visitor in; if not, it has been told why."""
    # A banned address hears so before any password is checked (or guessed).
    error = session.ctx.moderation.banned(session.source) or session.ctx.check_password(
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
) -> bool:
    """Join the visitor to the room as `name`, resuming after message `since` if given;
    False when the session is over (refused, or out of tries at a name)."""
    ctx = session.ctx
    if invite is not None:
        refusal = ctx.moderation.banned(session.source) or ctx.check_invite(
            session.source, invite, name, trio.current_time()
        )
        if refusal is not None:
            session.send_nowait(refusal)
            return False
    elif session.conn.mode is Mode.JSON and not check_password(session, password):
        return False
    stored: list[Event] = []
    missed = 0
    if since is not None and ctx.history is not None:
        missed, stored = await _stored_since(ctx, since, name)
        if stored:
            since = max(e.seq for e in stored if isinstance(e, Message))
    if len(ctx.room) >= ctx.limits.max_members:
        session.send_nowait(Error("room_full", "the room is full; try again later"))
        return False
    if ctx.moderation.locked:
        session.send_nowait(Error("locked", "the room is locked: nobody new can join for now"))
        return False
    start = None
    if since is not None:
        # Sync from here to the join: nothing can be appended between the two, so what the
        # log still holds after the stored messages follows them, each once.
        start, more = ctx.room.resume_point(since, ctx.limits.resume_max)
        missed += 0 if stored else more
    resumed: list[Event] = [*([Gap(missed)] if missed else []), *stored]
    try:
        session.member = ctx.room.join(
            name,
            dialect=_dialect(session),
            wake=session.delivery.flush_nowait,
            kick=session.kick,
            welcome=lambda display, names: b"".join(
                session.encode(event)
                for event in (
                    Welcome(display, ctx.room.name, names, topic=ctx.room.topic, seq=ctx.room.seq),
                    *resumed,
                )
            ),
            finish=session.finish_nowait,
            source=session.source,
            invited=invite is not None,
            start=start,
        )
    except Refused as exc:
        session.send_nowait(Error(exc.code, exc.message))
        session.name_tries += 1
        return session.conn.state is not State.CLOSED and session.name_tries < NAME_TRIES
    session.delivery.joined(session.member)
    session.authenticated = True
    ctx.gate.authenticated(session.source)
    log.info("%s joined from %s (%s)", session.member.name, session.source, session.conn.mode.value)
    return True


async def _stored_since(ctx: ServerContext, since: int, name: str) -> tuple[int, list[Event]]:
    """What the history holds after message `since` that `name` may see: how many messages it
    leaves out, and the rest (ending with a message, so no notice comes twice at the seam with
    the log)."""
    store = ctx.history
    assert store is not None
    limit = ctx.limits.resume_max
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
