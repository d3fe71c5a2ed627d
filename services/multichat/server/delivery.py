"""Everything one connection is sent, in order, without ever waiting.

Before joining, a visitor's answers go straight to its socket. Once it is a member, whatever
it is sent goes through the room, in order with the log: the room wakes `flush_nowait` for a
frame meant for this member alone, and the fan-out calls it for everyone after a broadcast.
`Transport.send_nowait` gives the kernel what it takes at once; only when it will not take
everything does a drain task (in the server's nursery) wait for room in the socket. A
member that reads along, nearly every one, never needs it. A closing connection sends the
rest from its own task (`send_rest`).
"""

from __future__ import annotations

from typing import Protocol

import trio

from .member import Member
from .room import Room
from .transport import SendBatch, Transport

# One name for every drain task: trio would otherwise build a string for each.
DRAIN_TASK = "multichat.server.delivery.Delivery._drain"


class Owner(Protocol):
    """The connection a `Delivery` sends for (the session)."""

    def finish_nowait(self) -> None:
        """Stop reading; send what is queued, then close."""

    def kick(self, reason: str, /) -> None:
        """Drop the connection now."""


class Delivery:
    """One connection's outgoing side, and its member's `Outlet` in the room. `nursery` is
    set while the connection runs."""

    __slots__ = (
        "_drain_scope",
        "_drained",
        "_draining",
        "_owner",
        "_stored",
        "member",
        "nursery",
        "room",
        "transport",
    )

    def __init__(self, transport: Transport, room: Room, owner: Owner) -> None:
        self.transport = transport
        self.room = room
        # The session: finished when all is sent after the room closed or the peer is gone,
        # and what the room's `kick` and `finish_nowait` reach through this `Outlet`.
        self._owner = owner
        self.member: Member | None = None
        # Where a drain task runs, while the connection reads (`stop_drain` ends that).
        self.nursery: trio.Nursery | None = None
        self._draining = False
        self._drain_scope: trio.CancelScope | None = None  # the running drain task's
        self._drained: trio.Event | None = None  # set when a drain being stopped has ended
        # Set by a flush while the closing connection waits for the history (`send_last`).
        self._stored: trio.Event | None = None

    def send_nowait(self, data: bytes) -> None:
        """Queue `data` for this client, after everything already queued for it."""
        if self.member is not None:
            self.room.send_nowait(self.member, data)  # in order with the log; wakes us
        else:
            self._written(self.transport.send_nowait(data))

    def joined(self, member: Member) -> None:
        """The visitor is now `member`: send its welcome and history at once."""
        self.member = member
        member.sending = self.transport.blocked_since  # still blocked as a visitor?
        self.flush_nowait()

    # The room's `Outlet` (member.py): `flush_nowait` below, and these two, passed on.

    def kick(self, reason: str, /) -> None:
        self._owner.kick(reason)

    def finish_nowait(self) -> None:
        self._owner.finish_nowait()

    def flush_nowait(self, batch: SendBatch | None = None) -> None:
        """Send this member everything the room holds for it, as far as the socket takes it;
        with `batch`, add the write to it instead (the fan-out then sends the batch)."""
        member = self.member
        transport = self.transport
        if self._stored is not None:
            self._stored.set()
        if member is None or transport.blocked:
            return  # a blocked socket: the drain task takes the rest when there is room
        data = self.room.log.take_nowait(member)
        if not data:
            self._check_closed()
        elif batch is None:
            self._flushed(transport.send_nowait(data))
        else:
            batch.add(transport, data, self._flushed)

    def _flushed(self, taken: bool) -> None:
        self._written(taken)
        self._check_closed()

    def _check_closed(self) -> None:
        room, member = self.room, self.member
        if (
            room.closed
            and member is not None
            and not self.transport.blocked
            and not room.log.pending(member)
        ):
            self._owner.finish_nowait()  # the shutdown notice is out: close

    def _written(self, taken: bool) -> None:
        """After a write: a rest left waits for the drain task; a peer gone ends it all."""
        transport = self.transport
        if not taken:
            if self.member is not None:
                self.member.sending = transport.blocked_since  # stuck here: "too slow"
            self._start_drain()
        elif transport.broken:
            self._owner.finish_nowait()

    def _start_drain(self) -> None:
        if not self._draining and self.nursery is not None:
            self._draining = True
            self.nursery.start_soon(self._drain, name=DRAIN_TASK)

    async def _drain(self) -> None:
        try:
            with trio.CancelScope() as self._drain_scope:
                if self.nursery is not None:  # not stopped before it began
                    await self.send_rest()
        finally:
            self._drain_scope = None
            self._draining = False
            if self._drained is not None:
                self._drained.set()

    async def stop_drain(self) -> None:
        """The connection stops reading: stop the drain task, if any, and wait for its end, so
        that the rest goes out from the closing connection's own task and from nowhere else."""
        self.nursery = None
        if not self._draining:
            return
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        self._drained = trio.Event()
        try:
            await self._drained.wait()
        finally:
            self._drained = None

    async def send_last(self) -> None:
        """The connection is closing: send all it is owed, which for a member that has left
        may wait for the history to store it (its last echoes, why it was kicked). The caller
        bounds the wait."""
        await self.send_rest()
        member = self.member
        log = self.room.log
        try:
            while member is not None and log.pending(member) and not self.transport.broken:
                self._stored = trio.Event()
                await self._stored.wait()  # a flush: the history stored something
                self._stored = None
                await self.send_rest()
        finally:
            self._stored = None
            if member is not None:
                log.forget(member)

    async def send_rest(self) -> None:
        """Wait for room in the socket, send the rest, and whatever was queued meanwhile."""
        transport = self.transport
        self.flush_nowait()
        try:
            while transport.blocked:
                await transport.drain()
                if self.member is not None:
                    self.member.sending = None
                self.flush_nowait()
        except trio.BrokenResourceError:
            self._owner.finish_nowait()
