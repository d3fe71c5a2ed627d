"""multichat/1 over WebSocket, sans-I/O: each text message carries one JSON frame.

After the HTTP upgrade (http.py), wsproto parses the client's masked frames; this module turns
each whole text message into one line for `ServerConnection`, answers pings, and frames lines
going back. A server frame is not masked, so the frame of a room's log entry is the same bytes
for every member: `frame` builds it once and the room shares it, as it shares JSON lines.
"""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from .errors import RemoteProtocolError
from .events import CONNECTION_CLOSED, NEED_DATA, ConnectionClosed, NeedData
from .wire import MAX_FRAME

# RFC 6455 section 5.2: FIN set, opcode 1 (text).
_FIN_TEXT = 0x81
_MASKED = 0x80
# Payload lengths up to 125 fit in the first length byte; 126 and 127 announce 16- and 64-bit
# lengths after it.
_SHORT = 125
_MEDIUM = 0xFFFF


def frame(line: bytes) -> bytes:
    """One JSON line (newline included, as `wire.encode` makes it) as a server text frame.

    The newline stays out: a WebSocket message already says where the frame ends.
    """
    size = len(line) - 1
    if size <= _SHORT:
        head = bytes((_FIN_TEXT, size))
    elif size <= _MEDIUM:
        head = bytes((_FIN_TEXT, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((_FIN_TEXT, 127)) + size.to_bytes(8, "big")
    return head + line[:-1]


class WebSocketConnection:
    """The frames of one WebSocket after its upgrade, as lines. No I/O.

    Feed bytes with `receive_data`, take each client message as a line with `next_line`, and
    send what `data_to_send` returns (pongs, the answer to a close) after each call.
    """

    __slots__ = (
        "_buffer",
        "_close_code",
        "_closed",
        "_max_message",
        "_message",
        "_outgoing",
        "_ws",
    )

    def __init__(self, trailing_data: bytes = b"", *, max_message: int = MAX_FRAME) -> None:
        # wsproto's state is 1.7 KiB a connection, most of what a member on WebSocket costs
        # beyond one on TCP; a chat client may never send a frame that needs it (`_wsproto`).
        self._ws: Connection | None = None
        self._message: list[str] = []  # the fragments of a text message so far
        self._max_message = max_message
        self._outgoing = bytearray()
        self._closed = False
        # Why we will close, once the error that ends the connection has been sent.
        self._close_code: int = CloseReason.NORMAL_CLOSURE
        # Whole, unfragmented, masked text frames (all a chat client sends) are read here:
        # through wsproto each cost 26 us, a sixth of what the fan-out spends on a message.
        # The first frame of any other kind hands this buffer, and the rest, to wsproto.
        self._buffer: bytearray | None = bytearray()
        if trailing_data:
            self.receive_data(trailing_data)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; `b""` means the TCP connection closed."""
        if self._closed or (self._ws is not None and self._ws.state is ConnectionState.CLOSED):
            return
        if not data:
            self._closed = True
        elif self._buffer is not None:
            self._buffer += data
        else:
            self._wsproto().receive_data(data)

    def next_line(self) -> bytes | NeedData | ConnectionClosed:
        """The next whole text message as a line. Raises RemoteProtocolError."""
        buffer = self._buffer
        if buffer is not None:
            line = self._text_frame(buffer)
            if line is not None:
                return line
            self._buffer = None  # not a frame for the short way: wsproto reads from here
            self._wsproto().receive_data(bytes(buffer))
        ws = self._wsproto()
        for event in ws.events():
            if isinstance(event, TextMessage):
                self._message.append(event.data)
                size = sum(len(part) for part in self._message)
                if size > self._max_message:
                    self._fail(CloseReason.MESSAGE_TOO_BIG)
                    raise RemoteProtocolError(
                        f"message longer than {self._max_message} characters", "frame_too_long"
                    )
                if event.message_finished:
                    text = "".join(self._message)
                    self._message.clear()
                    # A raw newline can only sit between JSON tokens, where it means nothing;
                    # kept, it would split the message into two frames.
                    return text.replace("\n", " ").encode("utf-8") + b"\n"
            elif isinstance(event, BytesMessage):
                self._fail(CloseReason.UNSUPPORTED_DATA)
                raise RemoteProtocolError("multichat/1 messages are text, not binary")
            elif isinstance(event, Ping):
                self._outgoing += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._outgoing += ws.send(event.response())  # the client closed
                elif ws.state is ConnectionState.OPEN:
                    # wsproto found a broken frame (bad mask, bad UTF-8): close with its code.
                    self._fail(event.code)
                    raise RemoteProtocolError(f"bad WebSocket frame: {event.reason}")
                self._closed = True
                return CONNECTION_CLOSED
        return CONNECTION_CLOSED if self._closed else NEED_DATA

    def _text_frame(self, buffer: bytearray) -> bytes | NeedData | ConnectionClosed | None:
        """A whole masked text frame at the start of `buffer`, as a line; None for any other
        frame (wsproto's business). Raises RemoteProtocolError."""
        if len(buffer) < 2:
            return CONNECTION_CLOSED if self._closed else NEED_DATA
        if buffer[0] != _FIN_TEXT or not buffer[1] & _MASKED:
            return None
        size = buffer[1] & 0x7F
        start = 2
        if size == 126:
            if len(buffer) < 4:
                return CONNECTION_CLOSED if self._closed else NEED_DATA
            size, start = int.from_bytes(buffer[2:4], "big"), 4
        elif size == 127:
            return None
        end = start + 4 + size
        if len(buffer) < end:
            return CONNECTION_CLOSED if self._closed else NEED_DATA
        # XOR the payload with its mask as one big integer: one C-level operation.
        mask = bytes(buffer[start : start + 4]) * (size // 4 + 1)
        payload = int.from_bytes(buffer[start + 4 : end], "little")
        data = (payload ^ int.from_bytes(mask[:size], "little")).to_bytes(size, "little")
        del buffer[:end]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(CloseReason.INVALID_FRAME_PAYLOAD_DATA)
            raise RemoteProtocolError("bad WebSocket frame: the text is not UTF-8") from None
        if len(text) > self._max_message:
            self._fail(CloseReason.MESSAGE_TOO_BIG)
            raise RemoteProtocolError(
                f"message longer than {self._max_message} characters", "frame_too_long"
            )
        # A raw newline can only sit between JSON tokens, where it means nothing; kept, it
        # would split the message into two frames.
        return data.replace(b"\n", b" ") + b"\n"

    def data_to_send(self) -> bytes:
        """Frames the protocol sends on its own: pongs and the answer to a close."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def close(self) -> bytes:
        """The close frame to send last: normal, or the code of the error that ended it."""
        ws = self._wsproto()
        if ws.state is not ConnectionState.OPEN:
            return b""
        return ws.send(CloseConnection(code=self._close_code))

    def _wsproto(self) -> Connection:
        """wsproto's connection, made when first needed: the short way has read every frame
        so far, so it starts at a frame's boundary, in the open state."""
        if self._ws is None:
            self._ws = Connection(ConnectionType.SERVER)
        return self._ws

    def _fail(self, code: int) -> None:
        # The close frame waits for `close`: the error frame that says why must go first.
        self._close_code = code
        self._closed = True
