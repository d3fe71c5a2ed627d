"""The chat server: listeners, one session per connection, and graceful shutdown.

Shutdown is a cancel scope with a deadline: stop accepting, append the notice to the room's
log after everything already accepted, give every connection `shutdown_grace_seconds` to
receive it, then cancel whatever is left.
"""

from __future__ import annotations

import logging

import trio

from . import __version__, wire
from .auth import Secret
from .events import Error
from .limits import Limits
from .room import Room
from .session import ServerContext, Session

log = logging.getLogger("multichat.server")

DEFAULT_PORT = 5002
# How many connections the kernel may hold for us before we accept them; a room of friends
# joining at once, or a benchmark's 5,000, should not see refusals.
BACKLOG = 4096


def _source(stream: trio.SocketStream) -> str:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ChatServer:
    """One room, served on one port. Start it with `await nursery.start(server.serve)`."""

    def __init__(
        self,
        password: str,
        *,
        room: str = "multichat",
        limits: Limits = Limits(),
        control_token: str | None = None,
    ) -> None:
        self.room = Room(room, limits=limits)
        self.limits = limits
        self.ctx = ServerContext(
            room=self.room,
            password=Secret(password),
            limits=limits,
            version=__version__,
            control_token=Secret(control_token) if control_token is not None else None,
            request_shutdown=self.shutdown_nowait,
        )
        self.port: int | None = None
        self.shutdown_reason: str | None = None
        self._sessions: set[Session] = set()
        self._shutdown = trio.Event()
        self.stopped = trio.Event()  # set once `serve` has shut down

    async def serve(
        self,
        port: int = DEFAULT_PORT,
        host: str | None = None,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until `shutdown_nowait`, then shut down gracefully and return.

        Reports the bound port through `task_status`, so `port=0` works in tests.
        """
        try:
            await self._serve(port, host, task_status)
        finally:
            self.stopped.set()

    async def _serve(self, port: int, host: str | None, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("serving room %r on port %d", self.room.name, self.port)
        async with trio.open_nursery() as sessions:
            async with trio.open_nursery() as acceptors:
                for listener in listeners:
                    acceptors.start_soon(self._accept_loop, listener, sessions)
                task_status.started(self.port)
                await self._shutdown.wait()
                acceptors.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            reason = self.shutdown_reason or "the room closed"
            log.info("shutting down: %s", reason)
            self.room.close(reason)
            for session in list(self._sessions):
                session.shutdown_nowait(reason)
            sessions.cancel_scope.deadline = (
                trio.current_time() + self.limits.shutdown_grace_seconds
            )
        log.info("stopped")

    async def _accept_loop(self, listener: trio.SocketListener, sessions: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors, say: wait a little rather than spin or die.
                log.error("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            sessions.start_soon(self._run_session, stream)

    async def _run_session(self, stream: trio.SocketStream) -> None:
        source = _source(stream)
        refusal = self.ctx.gate.admit(source)
        if refusal is not None:
            log.warning("refused a connection from %s: %s", source, refusal)
            await _refuse(stream, refusal)
            return
        session = Session(stream, self.ctx, source)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    def shutdown_nowait(self, reason: str = "the host closed the room") -> None:
        """Begin a graceful shutdown; `serve` returns when it is done."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
        self._shutdown.set()


async def _refuse(stream: trio.SocketStream, message: str) -> None:
    with trio.move_on_after(1):
        try:
            await stream.send_all(wire.encode(Error("too_many_connections", message)))
        except trio.BrokenResourceError:
            pass
    await trio.aclose_forcefully(stream)
