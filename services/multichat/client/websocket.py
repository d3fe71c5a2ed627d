"""multichat/1 over WebSocket, as the client sees it: a trio stream of JSON lines.

`open_websocket` performs the upgrade (RFC 6455) on an open TCP or TLS stream and returns a
`WebSocketStream`, which the rest of the client uses exactly as it uses a TCP stream:
`send_all` takes JSON lines and sends each as one text message, `receive_some` gives back each
text message received as one line. Pings are answered, the server's close frame is the end of
the stream, and a binary message is a protocol error. wsproto does the framing and the
handshake; this module only moves bytes between it and the transport.

Two tasks use a stream at once, as with TCP: the reader and the writer. A pong the reader owes
is written by whichever of them holds the send lock, so the reader never waits behind a write
that the server is slow to take.
"""

from __future__ import annotations

import re

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from ..protocol.wslines import LineSplitter, message_bytes

# What one read asks of the transport: a welcome naming everyone in a big room, and the history
# after it, in a few reads. The stream buffers at most one read's worth of decoded lines.
RECEIVE_BYTES = 64 * 1024
# ngrok's error pages are about 5 KiB with the code near the top; a proxy's are smaller. The
# body is read only to find that code, so more is not worth waiting for.
MAX_REFUSAL_BODY = 64 * 1024
# ngrok's free plan puts an HTML warning page (ERR_NGROK_6024) in front of browsers; any value
# of this header skips it, and every other server ignores it.
NGROK_SKIP_WARNING = (b"ngrok-skip-browser-warning", b"1")
# A redirect's target is shown to the person (an http:// room moved to https://); a long one is
# cut, not printed in full.
MAX_LOCATION_CHARS = 200

# ngrok's own error codes, in its error pages' text and in an `ngrok-error-code` header.
_NGROK_CODE = re.compile(rb"ERR_NGROK_\d{1,6}")


class WebSocketError(trio.BrokenResourceError):
    """The server broke RFC 6455, or multichat's use of it (a binary message); one line."""


class UpgradeRefused(Exception):
    """The server answered the upgrade with a plain HTTP response instead of switching.

    `status` is the HTTP status; `ngrok_code` is ngrok's `ERR_NGROK_...` code when the answer
    came from ngrok's edge; `location` is where a redirect points.
    """

    def __init__(self, status: int, ngrok_code: str | None, location: str | None) -> None:
        super().__init__(f"HTTP {status}" + (f" ({ngrok_code})" if ngrok_code else ""))
        self.status = status
        self.ngrok_code = ngrok_code
        self.location = location


async def open_websocket(transport: trio.abc.Stream, host: str, target: str) -> WebSocketStream:
    """Upgrade `transport` to a WebSocket; closes `transport` if anything goes wrong.

    `host` is the Host header (with the port when it is not the scheme's default), `target` the
    request target (`/ws`). Raises UpgradeRefused for an HTTP answer, WebSocketError for an
    answer that is not HTTP or not a valid upgrade, and trio.BrokenResourceError if the
    connection ends before an answer.
    """
    stream = WebSocketStream(transport)
    try:
        await stream._upgrade(host, target)
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise
    return stream


class WebSocketStream(trio.abc.Stream):
    """JSON lines over an upgraded connection, as open_websocket returns it."""

    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport_stream = transport  # named as trio.SSLStream names its own
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._lines = LineSplitter()
        self._incoming = bytearray()  # received lines not yet returned by receive_some
        self._outgoing = bytearray()  # frames not yet written: the writer's, pongs, close
        self._send_lock = trio.Lock()
        self._eof = False
        self._error: str | None = None  # why the stream is unusable, once it is
        self._broken = False  # a transport write failed or was interrupted
        self._closed = False
        self._receiving = False
        self._sending = False
        # The upgrade's answer.
        self._answered = False  # any byte of it
        self._accepted = False
        self._refusal: RejectConnection | None = None
        self._refusal_body = bytearray()
        self._refusal_done = False

    # -- the upgrade --

    async def _upgrade(self, host: str, target: str) -> None:
        request = Request(host=host, target=target, extra_headers=[NGROK_SKIP_WARNING])
        self._outgoing += self._ws.send(request)
        await self._flush()
        while not self._accepted:
            if self._refusal is not None and self._refusal_done:
                raise self._refused(self._refusal)
            if self._error is not None:
                raise WebSocketError(self._error)
            await self._read()
            if self._eof and not self._accepted and self._refusal is None:
                raise trio.BrokenResourceError("the server closed the connection without answering")

    def _refused(self, refusal: RejectConnection) -> UpgradeRefused:
        headers = {name.lower(): value for name, value in refusal.headers}
        found = _NGROK_CODE.search(headers.get(b"ngrok-error-code", b""))
        found = found or _NGROK_CODE.search(self._refusal_body)
        location = headers.get(b"location")
        return UpgradeRefused(
            refusal.status_code,
            found.group().decode("ascii") if found else None,
            location[:MAX_LOCATION_CHARS].decode("ascii", "replace") if location else None,
        )

    # -- reading --

    async def _read(self) -> None:
        """One read from the transport, and everything it brought."""
        data = await self.transport_stream.receive_some(RECEIVE_BYTES)
        if not data and self._refusal is not None:
            # A refusal's body may end with the connection; what came is all there is.
            self._refusal_done = True
            return
        if not data and self._ws.state is ConnectionState.CONNECTING and not self._answered:
            self._eof = True  # no answer at all, rather than an answer that is not HTTP
            return
        self._answered = True
        try:
            self._ws.receive_data(bytes(data) or None)
            for event in self._ws.events():
                self._handle(event)
                if self._eof or self._error is not None:
                    break
        except WSRemoteProtocolError as exc:
            self._error = f"the answer is not a WebSocket upgrade ({exc})"
        if self._outgoing:
            await self._flush()

    def _handle(self, event: Event) -> None:
        match event:
            case TextMessage(data=text, message_finished=finished):
                self._incoming += message_bytes(text, finished=finished)
            case BytesMessage():
                self._fail(
                    CloseReason.UNSUPPORTED_DATA,
                    "the server sent a binary message; multichat/1 is text only",
                )
            case Ping():
                if self._ws.state is ConnectionState.OPEN:
                    self._outgoing += self._ws.send(event.response())
            case CloseConnection(code=code, reason=reason):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._outgoing += self._ws.send(event.response())
                    self._eof = True
                elif self._ws.state is ConnectionState.CLOSED:
                    self._eof = True  # the answer to our close, or the connection ended
                else:
                    # wsproto reports a frame it cannot parse as a close it did not receive.
                    self._fail(code, f"the server sent a bad WebSocket frame ({reason})")
            case AcceptConnection():
                self._accepted = True
            case RejectConnection():
                self._refusal = event
                self._refusal_done = not event.has_body
            case RejectData(data=data, body_finished=finished):
                self._refusal_body += data[: MAX_REFUSAL_BODY - len(self._refusal_body)]
                if finished or len(self._refusal_body) >= MAX_REFUSAL_BODY:
                    self._refusal_done = True
            case _:  # Pong: nothing to do; the client's liveness checks are its own frames
                pass

    def _fail(self, code: int, why: str) -> None:
        self._error = why
        if self._ws.state is ConnectionState.OPEN:
            self._outgoing += self._ws.send(CloseConnection(code=code))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes of the lines received; b"" once the server has closed."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving")
        self._receiving = True
        try:
            if self._incoming:
                await trio.lowlevel.checkpoint()
            while not self._incoming:
                # Lines that came before the end, or before a fault, are delivered first.
                if self._error is not None:
                    raise WebSocketError(self._error)
                if self._eof:
                    return b""
                await self._read()
            size = len(self._incoming) if max_bytes is None else max_bytes
            data = bytes(self._incoming[:size])
            del self._incoming[:size]
            return data
        finally:
            self._receiving = False

    # -- writing --

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send each complete line in `data` as one text message (a partial line waits)."""
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            lines = self._lines.feed(data)
            if lines and self._ws.state is not ConnectionState.OPEN:
                raise trio.BrokenResourceError("the server closed the connection")
            for line in lines:
                self._outgoing += self._ws.send(TextMessage(data=line))
            await self._flush(wait=True)
        finally:
            self._sending = False

    async def _flush(self, *, wait: bool = False) -> None:
        """Write every frame queued; unless `wait`, leave them to a write already under way."""
        if self._send_lock.locked() and not wait:
            return  # its holder writes everything queued before it lets go
        async with self._send_lock:
            if self._broken:
                raise trio.BrokenResourceError("an earlier write to the server failed")
            while self._outgoing:
                data = bytes(self._outgoing)
                self._outgoing.clear()
                try:
                    await self.transport_stream.send_all(data)
                except BaseException:
                    # Part of a frame may have gone: nothing written after it would make sense.
                    self._broken = True
                    raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    # -- closing --

    async def aclose(self) -> None:
        """Say goodbye with a close frame if the connection allows, then close the transport.

        The server's answering close is not awaited: nothing more is read once the client is
        done, and the server closes its side either way.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._ws.state is ConnectionState.OPEN and not self._broken:
                self._outgoing += self._ws.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the connection is gone already: closing it is all that is left
        finally:
            await self.transport_stream.aclose()
