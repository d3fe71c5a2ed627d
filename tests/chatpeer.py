"""A raw multichat/1 peer for tests: real sockets, the project's own sans-I/O client side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from wsproto import ConnectionState, ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from multichat.protocol.connection import ClientConnection
from multichat.protocol.events import (
    ConnectionClosed,
    Control,
    Event,
    Hello,
    Message,
    NeedData,
    Say,
    Welcome,
)
from multichat.server.limits import Limits
from multichat.server.listeners import ChatServer

PASSWORD = "correct horse"
# Every test client connects from 127.0.0.1 and many send fast: lift those limits only.
RELAXED = Limits(
    connections_per_source=100_000,
    unauthenticated_per_source=100_000,
    unauthenticated_total=100_000,
    flood_per_second=0,
    failed_passwords_per_minute=1000,
    failed_passwords_global_per_minute=1000,
)


class Peer:
    """One connection speaking JSON frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = ClientConnection()
        self.welcome: Welcome | None = None

    @classmethod
    async def open(cls, port: int) -> Peer:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    @classmethod
    async def join(
        cls, port: int, name: str, password: str = PASSWORD, room: str | None = None
    ) -> Peer:
        peer = await cls.open(port)
        await peer.send(Hello(name, password, room=room))
        event = await peer.next_event()
        assert isinstance(event, Welcome), event
        peer.welcome = event
        return peer

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def say(self, text: str, id: str | None = None) -> None:
        await self.send(Say(text, id))

    async def next_event(self) -> Event | ConnectionClosed:
        while True:
            event = self.conn.next_event()
            if not isinstance(event, NeedData):
                return event
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            await self._feed(data)

    async def _feed(self, data: bytes) -> None:
        """Bytes from the server into the protocol (`b""`: it closed)."""
        self.conn.receive_data(data)

    async def expect(self, kind: type[Event]) -> Event:
        """Skip other events until one of `kind` arrives."""
        while True:
            event = await self.next_event()
            assert not isinstance(event, ConnectionClosed), f"closed while waiting for {kind}"
            if isinstance(event, kind):
                return event

    async def heard(self, text: str) -> Message:
        """The next message saying `text`, skipping the others."""
        while True:
            message = await self.expect(Message)
            assert isinstance(message, Message)
            if message.text == text:
                return message

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def host_command(port: int, token: str, command: str, *args: str) -> Event | ConnectionClosed:
    """A host's command with the control token, as `multichat kick ...` sends it: the answer."""
    peer = await Peer.open(port)
    await peer.send(Control(token, command, "", args))
    answer = await peer.next_event()
    await peer.aclose()
    return answer


async def read_until(stream: trio.SocketStream, needle: bytes, buffer: bytearray) -> bytes:
    """Raw bytes up to and including `needle` (for plain-text mode tests)."""
    while needle not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            raise AssertionError(f"closed before {needle!r}; got {bytes(buffer)!r}")
        buffer += data
    end = buffer.index(needle) + len(needle)
    out = bytes(buffer[:end])
    del buffer[:end]
    return out


@dataclass
class RoomFixture:
    server: ChatServer
    port: int
    nursery: trio.Nursery

    async def join(self, name: str, password: str = PASSWORD, room: str | None = None) -> Peer:
        return await Peer.join(self.port, name, password, room)


@asynccontextmanager
async def start_room(
    limits: Limits = RELAXED, password: str = PASSWORD, **kwargs: object
) -> AsyncIterator[RoomFixture]:
    server = ChatServer(password, limits=limits, **kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        yield RoomFixture(server, port, nursery)
        server.shutdown_nowait("test over")


class WsPeer(Peer):
    """One connection speaking multichat/1 in WebSocket messages (wsproto's client side)."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        super().__init__(stream)
        self.ws = ws
        self.closed_with: int | None = None  # the close code the server sent

    @classmethod
    async def open(  # type: ignore[override]
        cls, port: int, *, origin: str | None = None, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> WsPeer:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"origin", origin.encode())] if origin else []
        request = Request(
            host=f"127.0.0.1:{port}", target="/ws", extra_headers=headers + list(extra)
        )
        await stream.send_all(ws.send(request))
        while True:
            data = await stream.receive_some(65536)
            assert data, "closed during the WebSocket handshake"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(stream, ws)
                raise AssertionError(f"WebSocket refused: {event!r}")

    @classmethod
    async def join(  # type: ignore[override]
        cls, port: int, name: str, password: str = PASSWORD, room: str | None = None
    ) -> WsPeer:
        peer = await cls.open(port)
        await peer.send(Hello(name, password, room=room))
        event = await peer.next_event()
        assert isinstance(event, Welcome), event
        peer.welcome = event
        return peer

    async def send(self, event: Event) -> None:
        line = self.conn.send(event)
        await self.stream.send_all(self.ws.send(TextMessage(line.decode())))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _feed(self, data: bytes) -> None:
        if not data:
            self.conn.receive_data(b"")
            return
        self.ws.receive_data(data)
        for ws_event in self.ws.events():
            if isinstance(ws_event, TextMessage):
                assert ws_event.message_finished
                assert "\n" not in ws_event.data, "one frame per message, no newline"
                self.conn.receive_data(ws_event.data.encode() + b"\n")
            elif isinstance(ws_event, CloseConnection):
                self.closed_with = ws_event.code
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self.stream.send_all(self.ws.send(ws_event.response()))

    async def read_close(self) -> int | None:
        """Read to the end of the connection; the close code the server sent, if any."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return self.closed_with
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    self.closed_with = event.code
