"""multichat/1 connections, sans-I/O: bytes in, events out; events in, bytes out.

This module contains no networking code. The caller feeds what it read with `receive_data`
(`b""` for end of file), pulls events with `next_event`, and writes what `send` returns. A
server connection also speaks plain-text mode on the same port: see `receive_pause` and
`data_to_send`. The rules for what may be sent when live in `state.py`.
"""

from __future__ import annotations

from . import textmode, wire
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    PROTOCOL_VERSION,
    ConnectionClosed,
    Control,
    Error,
    Event,
    Hello,
    NeedData,
    Password,
    Quit,
)
from .state import Mode, Role, State, next_state
from .wire import MAX_FRAME

# States and modes read for every frame. On Python 3.11 reading `State.JOINED` costs 49 ns (the
# enum metaclass's `__getattr__` slows every lookup on the class), a module global 5 ns.
_ANSWERING, _CLOSED, _TEXT = State.ANSWERING, State.CLOSED, Mode.TEXT
_CLIENT, _SERVER = Role.CLIENT, Role.SERVER

# Servers answer `welcome` and `members` with every name in the room: 5,000 names of up to 32
# characters, 4 bytes each, fit with room to spare.
MAX_SERVER_FRAME = 1024 * 1024


class LineBuffer:
    """Bytes in, complete lines out; a line longer than `limit` is a fatal framing error."""

    __slots__ = ("_data", "_limit", "_scanned")

    def __init__(self, limit: int) -> None:
        self._data = bytearray()
        self._scanned = 0  # bytes already searched for a newline
        self._limit = limit

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes | bytearray) -> None:
        self._data += data

    def next_line(self) -> bytes | None:
        """The next line without its newline, or None until one is complete."""
        end = self._data.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._data)
            if self._scanned > self._limit:
                raise RemoteProtocolError(
                    f"no end of line within {self._limit} bytes", "frame_too_long"
                )
            return None
        if end > self._limit:
            raise RemoteProtocolError(f"line longer than {self._limit} bytes", "frame_too_long")
        line = bytes(self._data[:end])
        del self._data[: end + 1]
        self._scanned = 0
        return line

    def take_partial(self) -> bytes:
        """Everything buffered: a line the peer ended by pausing or closing."""
        line = bytes(self._data)
        self._data.clear()
        self._scanned = 0
        return line


class _Connection:
    # A server holds one per member, 5,000 at once: no per-instance dicts.
    __slots__ = ("_buffer", "_eof", "mode", "state")
    our_role: Role
    their_role: Role

    def __init__(self, limit: int) -> None:
        self.mode = Mode.UNKNOWN
        self.state = State.GREETING
        self._buffer = LineBuffer(limit)
        self._eof = False

    def _advance(self, sender: Role, event: Event) -> None:
        self.state = next_state(self.mode, sender, self.state, event, us=self.our_role)

    def _fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        """Bad input ends the conversation, except a bad frame from a member."""
        if self.state is not State.JOINED or error.code == "frame_too_long":
            self.state = State.CLOSED
        return error

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the peer; `b""` means the peer closed its side."""
        if not data:
            self._eof = True
        else:
            self._buffer.feed(data)

    def _next_line(self) -> bytes | NeedData | ConnectionClosed:
        if self.state is _CLOSED:
            return CONNECTION_CLOSED
        try:
            line = self._buffer.next_line()
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if line is not None:
            return line
        if self._eof:
            if self.mode is Mode.TEXT and len(self._buffer):
                return self._buffer.take_partial()
            self.state = State.CLOSED
            return CONNECTION_CLOSED
        return NEED_DATA


class ServerConnection(_Connection):
    """One client's side of multichat/1, as the server sees it. No I/O."""

    __slots__ = ("_outgoing", "_password", "_paused")
    our_role = Role.SERVER
    their_role = Role.CLIENT

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._outgoing = bytearray()
        self._paused = False
        self._password: str | None = None  # plain-text mode remembers it until the name

    def receive_data(self, data: bytes | bytearray) -> None:
        if self.mode is Mode.UNKNOWN and data:
            # JSON frames start with "{"; anything else is a person or the original client,
            # which may send its password before it sees a prompt.
            self.mode = Mode.JSON if data[:1] == b"{" else Mode.TEXT
        self._paused = False
        super().receive_data(data)

    def start_json(self) -> None:
        """The transport under this connection carries JSON frames only (a WebSocket)."""
        if self.mode is not Mode.UNKNOWN:
            raise LocalProtocolError(f"the connection already speaks {self.mode.value}")
        self.mode = Mode.JSON

    def receive_pause(self) -> None:
        """The peer went quiet: in plain-text mode, a partial line counts as a whole one.

        Before the first byte, a pause means a person is waiting for a prompt.
        """
        if self.mode is Mode.UNKNOWN:
            self.mode = Mode.TEXT
            self._outgoing += textmode.PASSWORD_PROMPT
        elif self.mode is Mode.TEXT and len(self._buffer):
            self._paused = True

    def has_partial_line(self) -> bool:
        """Whether bytes of an unfinished line are buffered."""
        return len(self._buffer) > 0

    def data_to_send(self) -> bytes:
        """Bytes the protocol sends on its own (the plain-text password prompt)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def next_event(self) -> Event | NeedData | ConnectionClosed:
        """The next complete event from the client; raises only RemoteProtocolError.

        Returns NEED_DATA while the server owes an answer to the greeting, so that a client
        that types ahead is read only once the answer is sent.
        """
        if self.state is _ANSWERING:
            return NEED_DATA
        line = self._next_line()
        if not isinstance(line, bytes):
            if line is not NEED_DATA or not (self._paused and len(self._buffer)):
                return line
            line = self._buffer.take_partial()
        self._paused = False
        try:
            event = self._text_event(line) if self.mode is _TEXT else wire.decode(line)
            if event is None:
                return self.next_event()
            if isinstance(event, Hello) and event.version != PROTOCOL_VERSION:
                raise RemoteProtocolError(
                    f"protocol version {event.version} is not supported (this server speaks "
                    f"{PROTOCOL_VERSION})",
                    "unsupported_version",
                )
            if isinstance(event, Control) and self.mode is _TEXT:
                raise RemoteProtocolError("control commands need a JSON connection")
            self.state = next_state(self.mode, _CLIENT, self.state, event, us=_SERVER)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if isinstance(event, Password):
            self._password = event.password
        return event

    def _text_event(self, line: bytes) -> Event | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("that line is not valid UTF-8") from None
        if self.state is State.JOINED:
            return textmode.parse_line(text)
        if self._password is None:
            return Password(text)
        if text.strip().lower() in textmode.QUIT_WORDS:
            return Quit()
        return Hello(text.strip(), self._password)

    def send(self, event: Event) -> bytes:
        """The bytes that carry `event` to this client; raises LocalProtocolError if illegal now."""
        if self.mode is Mode.UNKNOWN:
            raise LocalProtocolError("nothing may be sent before the client's first bytes")
        self._advance(Role.SERVER, event)
        if self.mode is Mode.TEXT:
            data = textmode.render(event)
            if isinstance(event, Error) and self.state is State.GREETING:
                data += textmode.NAME_PROMPT  # asked again: the name was taken or invalid
            return data
        return wire.encode(event)


class ClientConnection(_Connection):
    """The client's side of multichat/1 (JSON frames only). No I/O."""

    __slots__ = ()
    our_role = Role.CLIENT
    their_role = Role.SERVER

    def __init__(self, *, max_frame: int = MAX_SERVER_FRAME) -> None:
        super().__init__(max_frame)
        self.mode = Mode.JSON

    def next_event(self) -> Event | NeedData | ConnectionClosed:
        """The next complete event from the server; raises only RemoteProtocolError."""
        line = self._next_line()
        if not isinstance(line, bytes):
            return line
        try:
            event = wire.decode(line)
            self._advance(Role.SERVER, event)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        return event

    def send(self, event: Event) -> bytes:
        """The bytes that carry `event` to the server; raises LocalProtocolError if illegal now."""
        self._advance(Role.CLIENT, event)
        return wire.encode(event)
