"""TLS on the room's own port: the first byte of a ClientHello, then the same dialects inside."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, read_until
from multichat.protocol.events import Hello, Message, Welcome
from multichat.server.listeners import ChatServer
from multichat.server.tls import server_context

STEP = 10


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_context(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return server_context(str(cert_file), str(key_file))


@asynccontextmanager
async def tls_room(context: ssl.SSLContext | None) -> AsyncIterator[RoomFixture]:
    server = ChatServer(PASSWORD, limits=RELAXED, tls=context)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        yield RoomFixture(server, port, nursery)
        server.shutdown_nowait("test over")


async def tls_stream(port: int, ca: trustme.CA) -> trio.SSLStream[trio.SocketStream]:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), client, server_hostname="localhost"
    )
    await stream.do_handshake()
    return stream


async def test_json_over_tls_chats_with_plain_tcp_and_text_members(
    tls_context: ssl.SSLContext, ca: trustme.CA
) -> None:
    async with tls_room(tls_context) as room:
        with trio.fail_after(STEP):
            secure = Peer(await tls_stream(room.port, ca))  # type: ignore[arg-type]
            await secure.send(Hello("secure", PASSWORD))
            assert isinstance(await secure.next_event(), Welcome)
            plain = await room.join("plain")
            nc = await trio.open_tcp_stream("127.0.0.1", room.port)
            await nc.send_all(f"{PASSWORD}\nnc\n".encode())
            buffer = bytearray()
            await read_until(nc, b"tata to leave.\n", buffer)
            # A burst larger than a TLS record and a socket buffer: the drain path too.
            for i in range(200):
                await plain.say(f"{i:04d} " + "x" * 2000, str(i))
            got = [await secure.expect(Message) for _ in range(200)]
            await secure.say("over TLS", "s")
            seen = await plain.expect(Message)
            while seen.text != "over TLS":  # type: ignore[union-attr]
                seen = await plain.expect(Message)
            text = await read_until(nc, b"over TLS\n", buffer)
    assert [m.text[:4] for m in got if isinstance(m, Message)] == [f"{i:04d}" for i in range(200)]
    assert b"secure: over TLS" in text


async def test_the_page_and_websockets_work_over_tls(
    tls_context: ssl.SSLContext, ca: trustme.CA
) -> None:
    async with tls_room(tls_context) as room:
        with trio.fail_after(STEP):
            stream = await tls_stream(room.port, ca)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = bytearray()
            while chunk := await stream.receive_some(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"<html" in answer.lower()


async def test_tls_to_a_room_without_a_certificate_is_closed_and_the_room_goes_on(
    ca: trustme.CA,
) -> None:
    async with tls_room(None) as room:
        with trio.fail_after(STEP):
            with pytest.raises(trio.BrokenResourceError):
                await tls_stream(room.port, ca)
            await room.join("fine")


async def test_a_broken_handshake_costs_nothing_but_that_connection(
    tls_context: ssl.SSLContext,
) -> None:
    async with tls_room(tls_context) as room:
        with trio.fail_after(STEP):
            stream = await trio.open_tcp_stream("127.0.0.1", room.port)
            await stream.send_all(b"\x16\x03\x01\x00\x05hello-not-tls")
            while await stream.receive_some(100):  # at most an alert, then the close
                pass
            untrusting = ssl.create_default_context()  # does not trust the test CA
            raw = await trio.open_tcp_stream("127.0.0.1", room.port)
            refused = trio.SSLStream(raw, untrusting, server_hostname="localhost")
            with pytest.raises(trio.BrokenResourceError):
                await refused.do_handshake()
            await room.join("still-fine")
