"""The chat server: listeners, one session per connection, its rooms, and graceful shutdown.

Shutdown is a cancel scope with a deadline: stop accepting, append the notice to every room's
log after everything already accepted, give every connection `shutdown_grace_seconds` to
receive it, then cancel whatever is left.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from .. import __version__
from ..protocol import http, wire
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import DEFAULT_PORT, Error, NeedData
from ..protocol.proxy import MAX_V1_HEADER, ProxyHeader, ProxyHeaderParser
from .auth import Secret
from .backplane_address import BackplaneAddress
from .backplane_errors import BackplaneError
from .context import ServerContext
from .history import HistoryError, HistoryStore
from .history_settings import HistorySettings
from .limits import NODE_TIMEOUT_SECONDS, Limits
from .room import SEND_STALL_SECONDS, Refused
from .rooms import OpenHistory, Rooms
from .session import Session
from .transport import Transport

if TYPE_CHECKING:
    from .backplane import Backplane

log = logging.getLogger("multichat.server")

# HAProxy's default for the PROXY header; the tunnel sends it at once.
PROXY_HEADER_SECONDS = 5.0
# Connections through the tunnel that have not finished their header yet, all sources together.
MAX_PENDING_PROXY = 256
# TCP keepalive finds peers that vanished without a FIN (a laptop lid closed) even when they
# never answer pings: plain-text members cannot. Probes after 90 s idle, 4 more 15 s apart:
# gone at 150 s, the same as the idle timeout of JSON members.
KEEPALIVE_IDLE_SECONDS = 90
KEEPALIVE_INTERVAL_SECONDS = 15
KEEPALIVE_PROBES = 4
# How many connections the kernel may hold for us before we accept them; a room of friends
# joining at once, or a benchmark's 5,000, should not see refusals.
BACKLOG = 4096
# How often stalled members and quiet ones are looked for: a member is "too slow" after its
# socket has refused more for SEND_STALL_SECONDS, so looking as often costs at most that again.
SWEEP_SECONDS = SEND_STALL_SECONDS
# One name for every connection's task: trio would otherwise build a string for each.
SESSION_TASK = "multichat.server.session.Session.run"
PROXIED_TASK = "multichat.server.listeners.ChatServer._run_proxied"


def _keepalive(sock: trio.socket.SocketType) -> None:
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), KEEPALIVE_IDLE_SECONDS),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_SECONDS),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
    ]
    for level, option, value in options:
        if option is not None:  # not every platform has every knob
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)


async def _read_tunnel_preamble(stream: trio.SocketStream) -> tuple[str, bytes] | None:
    """The friend's address and the bytes read so far, or None if the stream ended first.

    An HTTPS endpoint sends no PROXY header: it forwards HTTP with `X-Forwarded-For`, which is
    trusted here only because this listener is on loopback for the tunnel alone.
    """
    data = await stream.receive_some(MAX_V1_HEADER)
    while data and http.looks_like_http(data[:8]) is None:
        more = await stream.receive_some(MAX_V1_HEADER)
        if not more:
            return None
        data += more
    if not data:
        return None
    if http.looks_like_http(data[:8]):
        request = http.HttpConnection()
        request.receive_data(data)
        while True:
            try:
                head = request.next_request()
            except RemoteProtocolError:
                return "tunnel", data  # the session answers 400
            if not isinstance(head, NeedData):
                return head.forwarded_for() or "tunnel", data
            more = await stream.receive_some(http.MAX_REQUEST_HEAD)
            request.receive_data(more)
            data += more
    parser = ProxyHeaderParser()
    parser.receive_data(data)
    while not isinstance(result := parser.next_header(), ProxyHeader):
        more = await stream.receive_some(MAX_V1_HEADER)
        if not more:
            return None
        parser.receive_data(more)
    return (result.source[0] if result.source else "tunnel"), parser.trailing


def _source(stream: trio.SocketStream) -> str:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ChatServer:
    """Rooms, served on one port. Start it with `await nursery.start(server.serve)`.

    `room` is the default room (where a hello that names none goes), `rooms` more rooms the
    host makes; `history` is the default room's store, and `room_history` opens any other
    room's (None: they keep none). With `open_rooms`, a member may make a room by joining it.
    With `backplane`, every room is served with every other server started with the same
    Redis and password (relay.py): history and resume come from Redis, and `history` and
    `room_history` are not used. Raises ValueError for a room name that is not allowed, or
    too many rooms.
    """

    def __init__(
        self,
        password: str,
        *,
        room: str = "multichat",
        rooms: Sequence[str] = (),
        open_rooms: bool = False,
        limits: Limits = Limits(),
        control_token: str | None = None,
        tls: ssl.SSLContext | None = None,
        history: HistoryStore | None = None,
        room_history: OpenHistory | None = None,
        history_settings: HistorySettings = HistorySettings(),
        backplane: BackplaneAddress | None = None,
        node_timeout: float = NODE_TIMEOUT_SECONDS,
    ) -> None:
        self.backplane: Backplane | None = None
        if backplane is not None:
            # Here, not at the top: Redis's client takes longer to import than the rest of the
            # server, and only a server with a backplane needs it (backplane_errors.py).
            from .backplane import Backplane

            self.backplane = Backplane(
                backplane,
                on_entries=lambda key, entries: self.rooms.receive(key, entries),
                on_seats_lost=lambda seats: self.rooms.seats_lost(seats),
                on_availability=lambda up: self.rooms.availability(up),
                password=password,
                # The history's retention is the stream's: the room's log lives there.
                retention=history_settings.keep_entries,
                node_timeout=node_timeout,
            )
            history = room_history = None
        self.rooms = Rooms(
            room,
            limits=limits,
            history=history,
            open_history=room_history,
            history_settings=history_settings,
            open_rooms=open_rooms,
            backplane=self.backplane,
        )
        for name in rooms:
            try:
                self.rooms.add_nowait(name)
            except Refused as exc:
                raise ValueError(exc.message) from None
        self.room = self.rooms.default.room  # the default room
        self.limits = limits
        self.ctx = ServerContext(
            rooms=self.rooms,
            password=Secret(password),
            limits=limits,
            version=__version__,
            control_token=Secret(control_token) if control_token is not None else None,
            request_shutdown=self.shutdown_nowait,
            tls=tls,
        )
        self.port: int | None = None
        self.proxy_port: int | None = None
        self._pending_proxy = 0
        self.shutdown_reason: str | None = None
        self._sessions = self.ctx.sessions
        self._shutdown = trio.Event()
        self.stopped = trio.Event()  # set once `serve` has shut down

    async def serve(
        self,
        port: int = DEFAULT_PORT,
        host: str | None = None,
        *,
        proxy_port: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until `shutdown_nowait`, then shut down gracefully and return.

        Reports the bound port through `task_status`, so `port=0` works in tests. With
        `proxy_port`, also listen on 127.0.0.1 for a tunnel that sends PROXY headers (v1 or
        v2) naming each friend's real address; `self.proxy_port` is the bound port.
        Raises OSError (the port), BackplaneError (the backplane cannot be used) or
        HistoryError (the history's process cannot start).
        """
        failure: BackplaneError | HistoryError | None = None
        try:
            # Listening first: a port in use is a plain OSError for the caller, not a group.
            listeners = await self._listen(port, host, proxy_port)
            async with trio.open_nursery() as storage:
                # The history's process outlives the writers that commit through it.
                process = self.rooms.history_process
                await storage.start(process.run)
                async with trio.open_nursery() as keeper:
                    # The history writers (and the backplane) outlive the listeners and the
                    # sessions: the last echoes and leaves wait for them. Cancelled, they
                    # commit what they hold (the backplane: its members' leaves).
                    try:
                        await keeper.start(self.ctx.readiness.run)
                        if self.backplane is not None:
                            await keeper.start(self.backplane.run)
                        await self._serve(keeper, *listeners, task_status)
                    except (BackplaneError, HistoryError) as exc:
                        # Raised in here, it would reach the caller wrapped in an ExceptionGroup.
                        failure = exc
                        for listener in listeners[0] + listeners[1]:
                            await listener.aclose()
                    keeper.cancel_scope.cancel()
                process.close_nowait()
        finally:
            self.stopped.set()
        if failure is not None:
            raise failure

    async def _listen(
        self, port: int, host: str | None, proxy_port: int | None
    ) -> tuple[list[trio.SocketListener], list[trio.SocketListener]]:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)
        self.port = listeners[0].socket.getsockname()[1]
        tunnel_listeners: list[trio.SocketListener] = []
        if proxy_port is not None:
            # Loopback only: whoever can reach this port can claim any source address.
            tunnel_listeners = await trio.open_tcp_listeners(
                proxy_port, host="127.0.0.1", backlog=BACKLOG
            )
            self.proxy_port = tunnel_listeners[0].socket.getsockname()[1]
            log.info("tunnel (PROXY protocol) listener on 127.0.0.1:%d", self.proxy_port)
        return listeners, tunnel_listeners

    async def _serve(
        self,
        keeper: trio.Nursery,
        listeners: list[trio.SocketListener],
        tunnel_listeners: list[trio.SocketListener],
        task_status: trio.TaskStatus[int],
    ) -> None:
        failure: BackplaneError | HistoryError | None = None
        async with trio.open_nursery() as sessions:
            # Each room's history is loaded before anyone may join it; its fan-out runs in the
            # sessions' nursery: it delivers the shutdown notice, then returns.
            try:
                await self.rooms.start(keeper, sessions)
            except (BackplaneError, HistoryError) as exc:
                failure = exc  # raised in here, it would be wrapped in an ExceptionGroup
                sessions.cancel_scope.cancel()
            else:
                await self._accept(keeper, sessions, listeners, tunnel_listeners, task_status)
        if failure is not None:
            raise failure
        log.info("stopped")

    async def _accept(
        self,
        keeper: trio.Nursery,
        sessions: trio.Nursery,
        listeners: list[trio.SocketListener],
        tunnel_listeners: list[trio.SocketListener],
        task_status: trio.TaskStatus[int],
    ) -> None:
        """Take connections until shutdown; then close every room, give every connection its
        grace, and return (the sessions' nursery ends them)."""
        async with trio.open_nursery() as acceptors:
            for listener in listeners:
                acceptors.start_soon(self._accept_loop, listener, sessions, False)
            for listener in tunnel_listeners:
                acceptors.start_soon(self._accept_loop, listener, sessions, True)
            acceptors.start_soon(self._sweep)
            # Once the rooms are open (their history loaded) and connections are taken, not
            # before: a room that cannot open was never served. Tools wait for this line (the
            # benchmark, the tests): its words stay as they are.
            log.info("serving room %r on port %d", self.rooms.default.name, self.port)
            others = [repr(room.name) for room in self.rooms if room is not self.rooms.default]
            if others:
                log.info("and rooms %s", ", ".join(others))
            task_status.started(listeners[0].socket.getsockname()[1])
            await self._shutdown.wait()
            acceptors.cancel_scope.cancel()
        for listener in listeners + tunnel_listeners:
            await listener.aclose()
        reason = self.shutdown_reason or "the room closed"
        log.info("shutting down: %s", reason)
        self.rooms.close(reason)
        for session in list(self._sessions):
            session.shutdown_nowait(reason)
        sessions.cancel_scope.deadline = trio.current_time() + self.limits.shutdown_grace_seconds

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(SWEEP_SECONDS)
            self.rooms.sweep_nowait()
            now = trio.current_time()
            for session in list(self._sessions):
                session.check_idle_nowait(now)

    async def _accept_loop(
        self, listener: trio.SocketListener, sessions: trio.Nursery, proxied: bool
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors, say: wait a little rather than spin or die.
                log.error("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            _keepalive(stream.socket)
            if proxied:
                sessions.start_soon(self._run_proxied, stream, sessions, name=PROXIED_TASK)
            else:
                source = _source(stream)
                session = self._admit(Transport.from_stream(stream), source)
                if session is not None:
                    sessions.start_soon(session.run, sessions, name=SESSION_TASK)

    async def _run_proxied(self, stream: trio.SocketStream, sessions: trio.Nursery) -> None:
        """Serve a friend behind the tunnel by real address: from the PROXY header a TCP
        endpoint sends, or the X-Forwarded-For of a request through an HTTPS endpoint."""
        if self._pending_proxy >= MAX_PENDING_PROXY:
            await trio.aclose_forcefully(stream)
            return
        self._pending_proxy += 1
        found: tuple[str, bytes] | None = None
        try:
            with trio.move_on_after(PROXY_HEADER_SECONDS):
                found = await _read_tunnel_preamble(stream)
        except (RemoteProtocolError, trio.BrokenResourceError) as exc:
            log.warning("dropped a tunnel connection with a bad PROXY header: %s", exc)
        finally:
            self._pending_proxy -= 1
        if found is None:
            await trio.aclose_forcefully(stream)
            return
        source, initial = found
        session = self._admit(Transport.from_stream(stream), source, initial, lan=False)
        if session is not None:
            await session.run(sessions)

    def _admit(
        self, transport: Transport, source: str, initial: bytes = b"", *, lan: bool = True
    ) -> Session | None:
        """A session for the connection, or None if its source has too many already."""
        refusal = self.ctx.gate.admit(source)
        if refusal is not None:
            log.warning("refused a connection from %s: %s", source, refusal)
            # One short answer into an empty socket buffer: the kernel takes it at once. An
            # HTTP request through the tunnel has been read already, and gets it in HTTP
            # (a browser shows "too many requests", not a broken response).
            if http.looks_like_http(initial[:8]):
                answer = http.refusal(429, refusal)
            else:
                answer = wire.encode(Error("too_many_connections", refusal))
            transport.send_nowait(answer)
            transport.close()
            return None
        return Session(transport, self.ctx, source, initial=initial, refuse_proxy=lan)

    def shutdown_nowait(self, reason: str = "the host closed the room") -> None:
        """Begin a graceful shutdown; `serve` returns when it is done."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
        self._shutdown.set()
