"""A lean Redis connection for the backplane's two hot commands: the writer's APPLY script and
the reader's XREAD.

Every message costs each server a share of one APPLY and of one XREAD. Through coredis a
command costs about 0.45 ms of CPU on the benchmark's machine (three tasks and two memory
streams per command), against 0.05 ms for the same round trip on a bare socket; at thousands
of messages a second that was a third of each server's time. Here one task sends a command and
reads its reply on a connection it alone uses, and hiredis, the C parser of Redis's own
clients (sans-I/O, like h11), parses the reply. Everything else (the start-up checks,
snapshots, heartbeats) goes through coredis as before.

A connection is opened on first use and dropped on any failure, cancellation included (a reply
may still be on its way, and the next command would read it): the next command opens a new
one. Callers bound each command with `trio.fail_after`; everything a lost Redis raises here is
an OSError (ConnectionError for a closed or broken connection), as LINK_ERRORS expects, and an
error reply is a `ReplyError`.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Sequence

import hiredis
import trio

from .backplane_address import BackplaneAddress

# Bytes asked of the socket at once: an XREAD of a busy room's last few milliseconds fits.
RECEIVE_BYTES = 64 * 1024
# The connection's name in CLIENT LIST, as coredis names the backplane's other connections.
CLIENT_NAME = "multichat-{node}"

Arg = str | int | float | bytes


def _pack(args: tuple[Arg, ...]) -> bytes:
    # hiredis's stub declares a one-item tuple; it packs any number.
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def _closed_meanwhile(stream: trio.abc.Stream) -> bool:
    """Whether Redis closed the connection since the last reply (it restarted, or dropped an
    idle client). Redis never speaks unasked on a connection like this one, so anything to
    read between commands means it is over. Found out before sending, not after: a command
    sent on a connection that then breaks may or may not have run, and cannot be sent again."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return False
    readable, _, _ = select.select([stream.socket.fileno()], [], [], 0)
    return bool(readable)


class ReplyError(Exception):
    """Redis answered with an error (out of memory, a read-only replica, a script error)."""


class RespConnection:
    """One connection to `address`, for one task at a time."""

    def __init__(self, address: BackplaneAddress, node: str) -> None:
        self.address = address
        self.node = node
        self._stream: trio.abc.Stream | None = None
        self._reader = hiredis.Reader(encoding="utf-8")

    async def call(self, *args: Arg) -> object:
        """Send one command, return its reply (None for Redis's nil). Raises ReplyError for an
        error reply, OSError when Redis cannot be reached or the connection breaks."""
        stream = self._stream
        if stream is not None and _closed_meanwhile(stream):
            await self.aclose()
            stream = None
        try:
            if stream is None:
                stream = self._stream = await self._open()
            await stream.send_all(_pack(args))
            reply = await self._reply(stream)
        except BaseException:
            await self.aclose()
            raise
        if isinstance(reply, hiredis.ReplyError):
            raise ReplyError(str(reply))
        return reply

    async def script(
        self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> object:
        """Run a Lua script by its SHA1, loading it first if Redis does not have it (after every
        restart Redis has no scripts)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        self._reader = hiredis.Reader(encoding="utf-8")  # nothing half-read carries over
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _reply(self, stream: trio.abc.Stream) -> object:
        reader = self._reader
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                raise ConnectionError(f"Redis answered something that is not RESP: {exc}") from None
            if reply is not False:
                return reply
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionError(f"the connection to Redis broke: {exc}") from None
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)  # type: ignore[arg-type]  # trio's sockets give bytes

    async def _open(self) -> trio.abc.Stream:
        address = self.address
        stream: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
        try:
            if address.tls:
                context = ssl.create_default_context()
                stream = trio.SSLStream(stream, context, server_hostname=address.host)
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    raise ConnectionError(
                        f"TLS with Redis failed: {exc.__cause__ or exc}"
                    ) from None
            commands: list[tuple[Arg, ...]] = []
            if address.password is not None:
                user = (address.username,) if address.username else ()
                commands.append(("AUTH", *user, address.password))
            if address.db:
                commands.append(("SELECT", address.db))
            commands.append(("CLIENT", "SETNAME", CLIENT_NAME.format(node=self.node)))
            await stream.send_all(b"".join(_pack(c) for c in commands))
            for _ in commands:
                reply = await self._reply(stream)
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis refused the connection: {reply}")
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            raise
        return stream
