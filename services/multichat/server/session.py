"""One client connection on the server: its one task reads and acts; sending never waits.

The task moves bytes from the socket into the protocol and acts on the events that come out:
first its way in (opening.py: TLS, HTTP and the WebSocket upgrade, then the login of login.py,
in time), then a member's posts and requests. What the client is sent goes out through its
`Delivery` (delivery.py), which never waits: the connection needs a second task only while the
kernel will not take what it is given. Upgraded to a WebSocket, it carries the same events in
WebSocket messages.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import trio

from ..protocol import textmode, websocket, wire
from ..protocol.connection import ServerConnection
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import (
    AskName,
    Away,
    Back,
    ConnectionClosed,
    Control,
    Error,
    Event,
    Hello,
    Help,
    JoinRoom,
    ListRooms,
    MessageId,
    Moderate,
    NeedData,
    Nick,
    Password,
    Ping,
    Pong,
    Quit,
    Say,
    SetTopic,
    Shutdown,
    Who,
)
from ..protocol.sanitize import clean_for_terminal
from ..protocol.state import Mode, State
from . import chat, login, opening
from .context import ServerContext
from .delivery import Delivery
from .flood import Fakelag
from .member import Member
from .room import Refused
from .rooms import HostedRoom
from .transport import RECEIVE_BYTES, Transport

log = logging.getLogger("multichat.server")

# A closing connection may take this long to receive its last frames (an error, the notice).
FLUSH_SECONDS = 5.0
# A member's session handles at most this many frames before the other tasks get a turn. One
# 16 KiB read holds about 200 chat lines: handled at once by five senders, they held the loop
# for tens of milliseconds in a burst, and the history's landed commits and every member's
# flush waited for it (trio checkpoints per operation; hypercorn yields per request).
FRAMES_PER_TURN = 32


class Session:
    """One connection, from its first byte to its close."""

    # 5,000 members are 5,000 of these: no per-instance dict.
    __slots__ = (
        "_finished",
        "_flood",
        "_kicked",
        "_pinged",
        "_scope",
        "authenticated",
        "conn",
        "ctx",
        "delivery",
        "heard",
        "hosted",
        "initial",
        "leave_reason",
        "member",
        "name_tries",
        "refuse_proxy",
        "source",
        "spoke_http",
        "transport",
        "websocket",
    )

    def __init__(
        self,
        transport: Transport,
        ctx: ServerContext,
        source: str,
        *,
        initial: bytes = b"",
        refuse_proxy: bool = True,
    ) -> None:
        self.transport = transport
        self.ctx = ctx
        self.source = source
        self.conn = ServerConnection()
        self.member: Member | None = None
        self.hosted: HostedRoom | None = None  # the room `member` is in
        self.leave_reason = "disconnected"
        self._finished = False  # nothing more will be queued: flush and close
        self._kicked = False  # dropped: close at once, without a lingering close
        # Its room is set on joining (and on moving): until then, nothing goes through one.
        self.delivery = Delivery(transport, ctx.rooms.default.room, self)
        self.name_tries = 0  # names refused so far (login.py)
        self._flood = Fakelag(ctx.limits.flood_burst, ctx.limits.flood_per_second, 0.0)
        self.authenticated = False  # it logged in (login.py): the gate counts it so
        self.initial = initial  # bytes that came with the PROXY header
        self.refuse_proxy = refuse_proxy
        self.heard = trio.current_time()  # when the peer last sent anything
        self._pinged = False
        self.spoke_http = False  # it spoke HTTP: what it is sent is HTTP or WebSocket frames
        self.websocket: websocket.WebSocketConnection | None = None
        # The reader's scope while it runs: cancelling it stops the reading, and `run` then
        # sends the rest. A scope, not a nursery, since 5,000 members hold one each.
        self._scope: trio.CancelScope | None = None

    # -- sending (never waits) --

    def send_nowait(self, event: Event) -> None:
        """Queue `event` for this client, in order after everything already queued."""
        self.delivery.send_nowait(self.encode(event))

    def encode(self, event: Event) -> bytes:
        """`event` as this client is sent it (in a WebSocket message, if it came that way)."""
        data = self.conn.send(event)
        return data if self.websocket is None else websocket.frame(data)

    def finish_nowait(self) -> None:
        """Stop reading; send what is queued, then close."""
        self._finished = True
        if self._scope is not None:
            self._scope.cancel()  # `run` sends the rest after it

    def kick(self, reason: str) -> None:
        """Drop the connection now (the room calls this for a member too slow to keep up)."""
        self.leave_reason = reason.split(":")[0]
        log.info("dropped %s (%s): %s", self._who(), self.source, reason)
        self._kicked = True
        if self._scope is not None:
            self._scope.cancel()

    def shutdown_nowait(self, reason: str) -> None:
        """The server is closing: a member gets the room's notice; anyone else gets it here."""
        if self.member is None:
            if self.conn.mode is not Mode.UNKNOWN and self.conn.state is not State.CLOSED:
                self.send_nowait(Shutdown(reason))
            self.finish_nowait()

    def check_idle_nowait(self, now: float) -> None:
        """Ping a JSON member that has been quiet a while; close one that never answers.

        The server calls this on a timer: a deadline per member would cost each one a cancel
        scope. Plain-text members cannot answer pings; TCP keepalive finds theirs gone.
        """
        if self.member is None or self.conn.mode is not Mode.JSON or self._finished:
            return
        limits = self.ctx.limits
        quiet = now - self.heard
        if quiet >= limits.idle_close_seconds:
            self.leave_reason = "timeout"
            self._refuse("timeout", f"no answer for {limits.idle_close_seconds:.0f} s")
            self.finish_nowait()
        elif quiet >= limits.idle_ping_seconds and not self._pinged:
            self._pinged = True
            self.send_nowait(Ping("idle"))

    def _leave(self) -> None:
        """Out of the room at once, so nothing new is queued while the last bytes go out."""
        member, hosted = self.member, self.hosted
        if member is not None and hosted is not None and member in hosted.room:
            log.info("%s left %s (%s)", member.name, hosted.name, self.leave_reason)
            hosted.room.remove(member, self.leave_reason)

    def _who(self) -> str:
        return self.member.name if self.member else "a visitor"

    # -- running --

    async def run(self, drains: trio.Nursery) -> None:
        """Serve the connection until it ends, then send what is left and close.

        This task reads: the handshake, then a member's frames. While the socket is full, a
        drain task waits for room in it, in `drains` (the server's nursery); when the reading
        stops, the drain stops too, and what is still queued goes out from here (`_close`).
        """
        self.ctx.sessions.add(self)
        self.delivery.nursery = drains
        try:
            # Until the visitor has joined, the reader's scope has the handshake's deadline
            # (opening.py moves it at each plain-text prompt): one scope a connection.
            handshake_seconds = self.ctx.limits.handshake_seconds
            with trio.CancelScope(deadline=trio.current_time() + handshake_seconds) as scope:
                self._scope = scope
                if not await opening.handshake(self, scope):
                    return
                scope.deadline = math.inf
                # A member waits for its input in the server's own epoll (readiness.py): it
                # waits most of its life, and trio's own wait costs a member 1 KiB more.
                readiness = self.ctx.readiness
                readiness.register(self.transport.sock)
                # Joined: the same steps as the handshake's, inline down to the wait for the socket,
                # since every frame of a waiting task is memory that 5,000 members hold at once.
                conn = self.conn
                transport = self.transport
                handled = 0  # frames handled since this task last let the others run
                # The last read emptied the socket (it took less than it asked for, in the
                # clear): the next goes straight to waiting. Trying first would cost a member
                # who sends a line at a time a failed recv() a line (epoll answers at once if
                # more came meanwhile).
                drained = False
                while True:
                    event = self.next_event()
                    if event is None:
                        continue
                    if isinstance(event, NeedData):
                        if conn.mode is Mode.TEXT and conn.has_partial_line():
                            await opening.receive(self)
                            continue
                        data = None if drained else transport.receive_nowait()
                        if data is None:
                            await readiness.wait_readable(transport.sock)
                            data = transport.receive_nowait()
                            if data is None:
                                continue
                        else:
                            # It came faster than we handle it: let the others have their turn.
                            await trio.lowlevel.checkpoint()
                        drained = len(data) < RECEIVE_BYTES and transport.tls is None
                        self.heard = trio.current_time()
                        self._pinged = False
                        if self.websocket is None:
                            conn.receive_data(data)
                        else:
                            self.feed_websocket(data)
                        continue
                    if isinstance(event, ConnectionClosed) or not await self.handle(event):
                        return
                    handled += 1
                    if handled >= FRAMES_PER_TURN:
                        handled = 0
                        await trio.lowlevel.checkpoint()
            if scope.cancelled_caught and not (self._finished or self._kicked):
                # Not stopped by us, so by the deadline, which only a visitor has.
                self._refuse("timeout", "too slow to log in; connect and try again")
                self.leave_reason = "timeout"
        except RemoteProtocolError as exc:
            self._refuse(exc.code, str(exc))
        except trio.BrokenResourceError:
            pass
        finally:
            await self._close()

    async def _close(self) -> None:
        """Out of the room; the rest sent (within FLUSH_SECONDS), then the socket closed."""
        self._scope = None
        self._finished = True
        self.ctx.sessions.discard(self)
        self.ctx.readiness.unregister(self.transport.sock)
        self._leave()
        self.ctx.gate.release(self.source, authenticated=self.authenticated)
        try:
            await self.delivery.stop_drain()
            if self.websocket is not None and not self._kicked:
                self.delivery.send_nowait(self.websocket.close())
            if not self._kicked:  # a member dropped as too slow reads nothing
                with trio.move_on_after(FLUSH_SECONDS):
                    await self.delivery.send_last()
                await self.transport.linger_close()
        finally:
            self.transport.close()
            if self.member is not None and self.hosted is not None:
                self.hosted.room.log.forget(self.member)

    def _refuse(self, code: str, message: str) -> None:
        """A last error before closing, sent whatever state the conversation is in.

        Before the mode is known it goes as JSON: a program reads it and a person can too. An
        HTTP request that never became a WebSocket gets nothing more: it had its answer.
        """
        event = Error(code, message)
        data = textmode.render(event) if self.conn.mode is Mode.TEXT else wire.encode(event)
        if self.websocket is not None:
            data = websocket.frame(data)
        elif self.spoke_http:
            return
        self.delivery.send_nowait(data)

    def next_event(self) -> Event | NeedData | ConnectionClosed | None:
        """The protocol's next event; None for a bad frame, answered with an error. One that
        ends the conversation is raised."""
        try:
            return self.conn.next_event()
        except RemoteProtocolError as exc:
            if self.conn.state is State.CLOSED:
                raise
            self.send_nowait(Error(exc.code, str(exc)))
            return None

    def feed_websocket(self, data: bytes) -> None:
        """WebSocket bytes in; each whole text message goes to the protocol as one line."""
        ws = self.websocket
        assert ws is not None
        if data:
            ws.receive_data(data)
        try:
            while isinstance(line := ws.next_line(), bytes):
                self.conn.receive_data(line)
            if isinstance(line, ConnectionClosed):
                self.conn.receive_data(b"")
        finally:
            pongs = ws.data_to_send()
            if pongs:
                self.delivery.send_nowait(pongs)

    async def handle(self, event: Event) -> bool:
        """Act on one frame from the client; False when the session is over."""
        match event:
            # (attributes, not positional captures: this case runs for every line a member
            # sends, and each capture is a lookup through __match_args__)
            case Say(to=None):
                return await self._say(event.text, event.id, event.action)
            case Say() | Nick() | Away() | Back() | SetTopic() | Help() | Moderate():
                return await self._request(event)
            case Who():
                # Answers cost the server work (a member list can be 60 KB): flood control
                # counts them like messages.
                if not await self._throttle():
                    return False
                assert self.hosted is not None
                self.send_nowait(self.hosted.room.who())
            case ListRooms():
                if not await self._throttle():
                    return False
                self.send_nowait(self.ctx.rooms.listing())
            case JoinRoom(room):
                if not await self._throttle():
                    return False
                return await login.move(self, room)
            case Ping(data):
                if not await self._throttle():
                    return False
                self.send_nowait(Pong(data))
            case Pong():
                pass
            case Quit(reason):
                # The reason goes to everyone's terminal: one line, no escape sequences.
                why = clean_for_terminal(reason[:100], single_line=True).strip()
                self.leave_reason = f"quit: {why}" if why and why != "quit" else "quit"
                return False
            case Password(password):
                if not login.check_password(self, password):
                    return False
                self.send_nowait(AskName())
            case Hello(name, password, _, invite, since, room):
                return await login.hello(self, name, password, invite, since, room)
            case Control(token, command, reason, args):
                now = trio.current_time()
                answer = self.ctx.control(self.source, token, command, reason, now, args)
                self.send_nowait(answer)
                return False
        return True

    async def _throttle(self) -> bool:
        """Charge one request to flood control and wait as long as it says.

        False if the sender has been held back too long: it is then disconnected.
        """
        delay = self._charge_nowait()
        if delay is None:
            return False
        if delay > 0:
            await trio.sleep(delay)
        return True

    def _charge_nowait(self) -> float | None:
        """Charge one request to flood control: how long to wait before acting on it, or None
        if the sender has been held back too long (it is then disconnected)."""
        now = trio.current_time()
        flood = self._flood
        delay = flood.charge(now)
        if delay > 0 and flood.held_for(now) > self.ctx.limits.flood_kick_seconds:
            self.leave_reason = "flooding"
            self._refuse("flooding", "disconnected for flooding the room")
            return None
        return delay

    async def _say(self, text: str, id: MessageId | None, action: bool) -> bool:
        # Charged before posting, so the burst is exactly `flood_burst` messages at once.
        # (`_throttle`, inlined: an await less for every line a member sends)
        delay = self._charge_nowait()
        if delay is None:
            return False
        if delay > 0:
            await trio.sleep(delay)
        member, hosted = self.member, self.hosted
        assert member is not None and hosted is not None
        refusal = hosted.moderation.muted(member)
        if refusal is not None:
            self.send_nowait(dataclasses.replace(refusal, id=id))
            return True
        if hosted.relay is not None:
            # Through Redis: the echo comes back with everyone's entries (relay.py).
            error = await hosted.relay.say(member, text, id, action)
            if error is not None and member in hosted.room:
                # With the line's id: a refusal comes at once, echoes of earlier lines later.
                self.send_nowait(dataclasses.replace(error, id=id))
            return True
        try:
            hosted.room.post(member, text, id, action=action)
        except Refused as exc:
            self.send_nowait(Error(exc.code, exc.message, id))
        else:
            hosted.fanout.posted_nowait()
        return True

    async def _request(self, request: chat.Request) -> bool:
        """Anything but a public message: flood control counts it the same."""
        if not await self._throttle():
            return False
        member, hosted = self.member, self.hosted
        assert member is not None and hosted is not None
        now = trio.current_time()
        if hosted.relay is not None:
            answer = await chat.answer_relayed(self.ctx.rooms, hosted, member, request, now)
        else:
            answer = chat.answer(self.ctx.rooms, hosted, member, request, now)
        if isinstance(answer, Error) and isinstance(request, Say):
            answer = dataclasses.replace(answer, id=request.id)  # a private line's refusal
        if answer is not None and member in hosted.room:
            self.send_nowait(answer)
        return True
