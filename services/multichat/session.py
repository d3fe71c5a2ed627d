"""One client connection on the server: a reader task and a writer task, nothing else.

The reader moves bytes from the socket into the protocol and acts on the events that come
out; the writer is the only task that sends, and sends everything queued in one write. What a
member receives comes from the room's log, so the room never waits for this connection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from . import textmode, wire
from .auth import Gate, Secret, Throttle
from .errors import RemoteProtocolError
from .events import (
    AskName,
    ConnectionClosed,
    Control,
    Error,
    Event,
    Hello,
    NeedData,
    Password,
    Ping,
    Pong,
    Quit,
    Say,
    Shutdown,
    Status,
    Welcome,
    Who,
)
from .flood import Fakelag
from .limits import Limits
from .linger import linger_close
from .protocol import ServerConnection
from .proxy import looks_like_proxy_header
from .room import Member, Refused, Room
from .sanitize import clean_for_terminal
from .state import Mode, State

log = logging.getLogger("multichat.server")

# Large enough to take a burst of frames in one call, small enough to cost nothing per member.
RECEIVE_BYTES = 16 * 1024
# Plain-text mode asks again for a taken name; a person needs a few tries, a script none.
NAME_TRIES = 5
# A closing connection may take this long to receive its last frames (an error, the notice).
FLUSH_SECONDS = 5.0
# Join and leave notices are not urgent: waiting this long for more batches them into one write.
# 5,000 members joining at once then cost each member a few writes, not 5,000 (the benchmark's
# join went from over 120 s at 0.05 s to 6 s).
PRESENCE_BATCH_SECONDS = 0.5
# ...unless this much is already waiting: then there is nothing to gain by waiting.
WRITE_BATCH_BYTES = 16 * 1024


@dataclass
class ServerContext:
    """What every connection of one server shares."""

    room: Room
    password: Secret
    limits: Limits
    version: str
    control_token: Secret | None = None
    request_shutdown: Callable[[str], None] = lambda reason: None
    failures: Throttle = field(init=False)
    gate: Gate = field(init=False)

    def __post_init__(self) -> None:
        lim = self.limits
        self.failures = Throttle(
            lim.failed_passwords_per_minute, lim.failed_passwords_global_per_minute
        )
        self.gate = Gate(
            lim.connections_per_source, lim.unauthenticated_per_source, lim.unauthenticated_total
        )


class Session:
    """One connection, from its first byte to its close."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        ctx: ServerContext,
        source: str,
        *,
        initial: bytes = b"",
        refuse_proxy: bool = True,
    ) -> None:
        self.stream = stream
        self.ctx = ctx
        self.source = source
        self.conn = ServerConnection()
        self.member: Member | None = None
        self.leave_reason = "disconnected"
        self._early = bytearray()  # frames before joining; after, the room queues them
        self._wakeup = trio.Event()
        self._finished = False  # nothing more will be queued: flush and close
        self._scope = trio.CancelScope()
        self._name_tries = 0
        self._answered = 0  # events handled: in the handshake, answers to prompts
        self._flood = Fakelag(ctx.limits.flood_burst, ctx.limits.flood_per_second, 0.0)
        self._authenticated = False
        self._initial = initial  # bytes that came with the PROXY header
        self._refuse_proxy = refuse_proxy

    # -- queueing (the writer sends) --

    def _wake(self) -> None:
        self._wakeup.set()

    def send_nowait(self, event: Event) -> None:
        """Queue `event` for this client, in order after everything already queued."""
        data = self.conn.send(event)
        if self.member is not None:
            self.ctx.room.send_nowait(self.member, data)
        else:
            self._early += data
            self._wake()

    def finish_nowait(self) -> None:
        """Send what is queued, then close."""
        self._finished = True
        self._wake()

    def kick(self, reason: str) -> None:
        """Drop the connection now (the room calls this for a member too slow to keep up)."""
        self.leave_reason = reason.split(":")[0]
        log.info("dropped %s (%s): %s", self._who(), self.source, reason)
        self._scope.cancel()

    def shutdown_nowait(self, reason: str) -> None:
        """The server is closing: a member gets the room's notice; anyone else gets it here."""
        if self.member is None:
            if self.conn.mode is not Mode.UNKNOWN and self.conn.state is not State.CLOSED:
                self.send_nowait(Shutdown(reason))
            self.finish_nowait()

    def _leave(self) -> None:
        """Out of the room at once, so nothing new is queued while the last bytes go out."""
        member = self.member
        if member is not None and member in self.ctx.room:
            log.info("%s left (%s)", member.name, self.leave_reason)
            self.ctx.room.remove(member, self.leave_reason)

    def _who(self) -> str:
        return self.member.name if self.member else "a visitor"

    # -- running --

    async def run(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, nursery.cancel_scope)
                    try:
                        await self._read_loop()
                    except RemoteProtocolError as exc:
                        self._refuse(exc.code, str(exc))
                    except trio.BrokenResourceError:
                        pass
                    except trio.TooSlowError:
                        self._refuse("timeout", "too slow to log in; connect and try again")
                        self.leave_reason = "timeout"
                    self._leave()
                    self.finish_nowait()
                    nursery.cancel_scope.deadline = trio.current_time() + FLUSH_SECONDS
        finally:
            self._leave()
            self.ctx.gate.release(self.source, authenticated=self._authenticated)
            try:
                if not self._scope.cancel_called:  # a member dropped as too slow reads nothing
                    await linger_close(self.stream)
            finally:
                await trio.aclose_forcefully(self.stream)

    def _refuse(self, code: str, message: str) -> None:
        """A last error before closing, sent whatever state the conversation is in.

        Before the mode is known it goes as JSON: a program reads it and a person can too.
        """
        event = Error(code, message)
        data = textmode.render(event) if self.conn.mode is Mode.TEXT else wire.encode(event)
        if self.member is not None:
            self.ctx.room.send_nowait(self.member, data)
        else:
            self._early += data
            self._wake()

    async def _write_loop(self, done: trio.CancelScope) -> None:
        room = self.ctx.room
        try:
            while True:
                finishing = self._finished
                member = self.member
                if member is not None and not finishing and not room.closed:
                    await self._coalesce(member)
                    finishing = self._finished
                data = bytes(self._early)
                self._early.clear()
                if member is not None:
                    data += room.take_nowait(member)
                if data:
                    if member is not None:
                        member.sending = trio.current_time()  # stuck here: "too slow"
                    try:
                        await self.stream.send_all(data)
                    finally:
                        if member is not None:
                            member.sending = None
                if finishing or (member is not None and room.closed and not room.pending(member)):
                    break
                if data:
                    continue
                self._wakeup = trio.Event()
                if member is not None:
                    room.park(member)
                await self._wakeup.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def _coalesce(self, member: Member) -> None:
        """Let join and leave notices pile up a little, so one write carries many.

        A write costs a system call whatever its size; a crowd arriving would otherwise cost
        each member one write per newcomer (5,000 joins: 12.5 million writes).
        """
        room = self.ctx.room
        if (
            room.pending(member)
            and room.presence_only(member)
            and room.backlog(member) < WRITE_BATCH_BYTES
        ):
            self._wakeup = trio.Event()
            room.park(member, lazy=True)  # a message ends the wait at once
            with trio.move_on_after(PRESENCE_BATCH_SECONDS):
                await self._wakeup.wait()
            room.unpark(member)

    async def _read_loop(self) -> None:
        conn = self.conn
        limits = self.ctx.limits
        with trio.fail_after(limits.handshake_seconds) as handshake:
            while conn.state is not State.JOINED:
                answered = self._answered
                if not await self._step():
                    return
                if (
                    conn.state is State.GREETING
                    and conn.mode is Mode.TEXT
                    and self._answered != answered
                ):
                    # Each plain-text prompt gets its own deadline: a person is typing. Bytes
                    # alone do not extend it, or a line sent a byte at a time would never end.
                    handshake.deadline = trio.current_time() + limits.handshake_seconds
        while await self._step():
            pass

    async def _step(self) -> bool:
        """Handle one event (reading more first if needed); False when the session is over."""
        conn = self.conn
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            if conn.state is State.CLOSED:
                raise
            self.send_nowait(Error(exc.code, str(exc)))
            return True
        if isinstance(event, NeedData):
            await self._receive()
            return True
        if isinstance(event, ConnectionClosed):
            return False
        self._answered += 1
        return await self._handle(event)

    async def _receive(self) -> None:
        conn = self.conn
        limits = self.ctx.limits
        if self._initial:
            conn.receive_data(self._initial)
            self._initial = b""
            return
        data: bytes | bytearray
        if conn.mode is Mode.UNKNOWN or (conn.mode is Mode.TEXT and conn.has_partial_line()):
            with trio.move_on_after(limits.text_pause_seconds) as waited:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            if waited.cancelled_caught:
                conn.receive_pause()
                self._early += conn.data_to_send()
                self._wake()
                return
        elif self.member is not None and conn.mode is Mode.JSON:
            data = await self._receive_or_ping()
        else:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        if (
            conn.mode is Mode.UNKNOWN
            and self._refuse_proxy
            and looks_like_proxy_header(bytes(data[:16]))
        ):
            # Only the tunnel's own listener may name another source address.
            raise RemoteProtocolError(
                "PROXY headers are accepted only from the tunnel, not on this port",
                "bad_proxy_header",
            )
        conn.receive_data(data)

    async def _receive_or_ping(self) -> bytes | bytearray:
        limits = self.ctx.limits
        with trio.move_on_after(limits.idle_ping_seconds):
            return await self.stream.receive_some(RECEIVE_BYTES)
        self.send_nowait(Ping("idle"))
        with trio.move_on_after(limits.idle_close_seconds - limits.idle_ping_seconds):
            return await self.stream.receive_some(RECEIVE_BYTES)
        self.leave_reason = "timeout"
        self._refuse("timeout", f"no answer for {limits.idle_close_seconds:.0f} s")
        return b""

    async def _handle(self, event: Event) -> bool:
        match event:
            case Say(text, id):
                return await self._say(text, id)
            case Who():
                self.send_nowait(self.ctx.room.who())
            case Ping(data):
                self.send_nowait(Pong(data))
            case Pong():
                pass
            case Quit(reason):
                # The reason goes to everyone's terminal: one line, no escape sequences.
                why = clean_for_terminal(reason[:100], single_line=True).strip()
                self.leave_reason = f"quit: {why}" if why and why != "quit" else "quit"
                return False
            case Password(password):
                if not self._check_password(password):
                    return False
                self.send_nowait(AskName())
            case Hello(name, password):
                return self._hello(name, password)
            case Control(token, command, reason):
                self._control(token, command, reason)
                return False
        return True

    def _check_password(self, attempt: str) -> bool:
        ctx = self.ctx
        now = trio.current_time()
        if not ctx.failures.allowed(self.source, now):
            wait = math.ceil(ctx.failures.retry_after(self.source, now))
            log.warning("throttled a login from %s", self.source)
            self.send_nowait(Error("throttled", f"too many wrong passwords; try again in {wait} s"))
            return False
        if ctx.password.matches(attempt):
            return True
        ctx.failures.record(self.source, now)
        log.warning("wrong password from %s", self.source)
        self.send_nowait(Error("bad_password", "wrong password"))
        return False

    def _hello(self, name: str, password: str) -> bool:
        ctx = self.ctx
        if self.conn.mode is Mode.JSON and not self._check_password(password):
            return False
        if len(ctx.room) >= ctx.limits.max_members:
            self.send_nowait(Error("room_full", "the room is full; try again later"))
            return False
        try:
            self.member = ctx.room.join(
                name,
                text=self.conn.mode is Mode.TEXT,
                wake=self._wake,
                kick=self.kick,
                welcome=lambda display, names: self.conn.send(
                    Welcome(display, ctx.room.name, names)
                ),
            )
        except Refused as exc:
            self.send_nowait(Error(exc.code, exc.message))
            self._name_tries += 1
            return self.conn.state is not State.CLOSED and self._name_tries < NAME_TRIES
        self._wake()  # the writer was waiting as a visitor; its welcome is queued in the room
        self._authenticated = True
        ctx.gate.authenticated(self.source)
        log.info("%s joined from %s (%s)", self.member.name, self.source, self.conn.mode.value)
        return True

    def _control(self, token: str, command: str, reason: str) -> None:
        ctx = self.ctx
        now = trio.current_time()
        if ctx.control_token is None or not ctx.failures.allowed(self.source, now):
            self.send_nowait(Error("bad_token", "control commands are not available"))
            return
        if not ctx.control_token.matches(token):
            ctx.failures.record(self.source, now)
            self.send_nowait(Error("bad_token", "wrong control token"))
            return
        if command not in ("status", "shutdown"):
            self.send_nowait(Error("bad_command", f"unknown control command {command[:40]!r}"))
            return
        self.send_nowait(Status(ctx.room.name, ctx.room.names(), ctx.room.uptime(), ctx.version))
        if command == "shutdown":
            log.info("shutdown requested by the control token: %s", reason or "(no reason)")
            ctx.request_shutdown(reason or "the host closed the room")

    async def _say(self, text: str, id: str | None) -> bool:
        ctx = self.ctx
        assert self.member is not None
        # Charged before posting, so the burst is exactly `flood_burst` messages at once.
        now = trio.current_time()
        delay = self._flood.charge(now)
        if self._flood.held_for(now) > ctx.limits.flood_kick_seconds:
            self.leave_reason = "flooding"
            self._refuse("flooding", "disconnected for flooding the room")
            return False
        if delay > 0:
            await trio.sleep(delay)
        try:
            ctx.room.post(self.member, text, id)
        except Refused as exc:
            self.send_nowait(Error(exc.code, exc.message))
        if ctx.room.congested:
            await trio.lowlevel.checkpoint()  # let the writers take what is queued first
        return True
