"""The tunnel's listener: every friend arrives from 127.0.0.1, named by a PROXY header.

Per-source limits and logs must use the address in the header, or the whole internet would
share one source's eight connections and three wrong passwords. The tunnel listener requires
a header (v1 or v2, strictly parsed, within 5 s); the LAN listener refuses one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from chatpeer import PASSWORD, Peer
from multichat.protocol import wire
from multichat.protocol.events import ConnectionClosed, Error, Hello, Message, Welcome
from multichat.protocol.proxy import MAX_V1_HEADER, Command, Family, ProxyHeader, build_v1, build_v2
from multichat.server.limits import Limits
from multichat.server.listeners import MAX_PENDING_PROXY, PROXY_HEADER_SECONDS, ChatServer

ALICE = "203.0.113.5"
BOB = "198.51.100.7"
CAROL6 = "2001:db8::7"


@asynccontextmanager
async def tunnel_room(limits: Limits = Limits()) -> AsyncIterator[ChatServer]:
    """A server with every default limit, its LAN port and its tunnel port on loopback."""
    server = ChatServer(PASSWORD, limits=limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.serve, 0, "127.0.0.1", proxy_port=0))
        yield server
        server.shutdown_nowait("test over")


def header(source: str, version: int = 2) -> bytes:
    family = Family.INET6 if ":" in source else Family.INET
    dest = "::1" if family is Family.INET6 else "127.0.0.1"
    built = ProxyHeader(version, Command.PROXY, family, (source, 40_000), (dest, 5002))
    return (build_v1 if version == 1 else build_v2)(built)


async def through_tunnel(server: ChatServer, data: bytes) -> trio.SocketStream:
    assert server.proxy_port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", server.proxy_port)
    await stream.send_all(data)
    return stream


async def join_from(
    server: ChatServer, source: str, name: str, *, version: int = 2, password: str = PASSWORD
) -> Peer:
    """Header and hello in one write, as a tunnel passes on a client that speaks at once."""
    peer = Peer(await through_tunnel(server, header(source, version)))
    await peer.send(Hello(name, password))
    return peer


async def joined_from(server: ChatServer, source: str, name: str, *, version: int = 2) -> Peer:
    peer = await join_from(server, source, name, version=version)
    event = await peer.next_event()
    assert isinstance(event, Welcome), event
    return peer


async def answer(peer: Peer) -> Error:
    """The error that refuses `peer`, followed by the close."""
    event = await peer.next_event()
    assert isinstance(event, Error), event
    assert isinstance(await peer.next_event(), ConnectionClosed)
    return event


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


# -- per-source limits by the header's address --


@pytest.mark.parametrize("version", [1, 2])
async def test_eight_connections_per_real_source(version: int) -> None:
    async with tunnel_room() as server:
        with trio.fail_after(10):
            alices = [
                await joined_from(server, ALICE, f"alice{n}", version=version) for n in range(8)
            ]
            ninth = await join_from(server, ALICE, "alice8", version=version)
            assert await answer(ninth) == Error(
                "too_many_connections", "too many connections from your address (at most 8)"
            )
            await joined_from(server, BOB, "bob", version=version)
            await joined_from(server, CAROL6, "carol", version=version)
            await alices[0].aclose()
            await trio.sleep(0.1)
            await joined_from(server, ALICE, "alice again", version=version)


async def test_unfinished_logins_are_counted_by_real_source() -> None:
    async with tunnel_room(Limits(connections_per_source=10)) as server:
        with trio.fail_after(10):
            silent = [await through_tunnel(server, header(ALICE)) for _ in range(8)]
            await trio.sleep(0.1)
            ninth = await join_from(server, ALICE, "alice")
            assert "unfinished logins" in (await answer(ninth)).message
            await joined_from(server, BOB, "bob")
            for stream in silent:
                await stream.aclose()


async def test_wrong_passwords_are_throttled_by_real_source() -> None:
    async with tunnel_room() as server:
        with trio.fail_after(20):
            codes = []
            for n in range(20):
                peer = await join_from(server, ALICE, "alice", password=f"guess{n}")
                codes.append((await answer(peer)).code)
            assert codes == ["bad_password"] * 3 + ["throttled"] * 17
            # Another source is not affected: its typo is a typo, and the right password works.
            peer = await join_from(server, BOB, "bob", password="typo")
            assert (await answer(peer)).code == "bad_password"
            await joined_from(server, BOB, "bob")


async def test_wrong_passwords_from_many_sources_share_a_global_budget() -> None:
    async with tunnel_room() as server:
        with trio.fail_after(30):
            limit = server.limits.failed_passwords_global_per_minute
            per_source = server.limits.failed_passwords_per_minute
            for n in range(limit):
                source = f"192.0.2.{n // per_source + 1}"
                peer = await join_from(server, source, "x", password=f"guess{n}")
                assert (await answer(peer)).code == "bad_password"
            peer = await join_from(server, "192.0.2.200", "x", password="guess")
            assert (await answer(peer)).code == "throttled"


async def test_logs_name_the_real_source(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="multichat.server")
    async with tunnel_room() as server:
        with trio.fail_after(10):
            await joined_from(server, ALICE, "alice")
            peer = await join_from(server, BOB, "bob", password="nope")
            await answer(peer)
    assert f"alice joined from {ALICE}" in caplog.text
    assert f"wrong password from {BOB}" in caplog.text
    assert "from 127.0.0.1" not in caplog.text


async def test_200_silent_friends_hold_no_slot_a_real_one_needs(autojump_clock: object) -> None:
    """Through the tunnel each silent socket has its own address: every limit at its default."""
    async with tunnel_room() as server:
        start = trio.current_time()
        closed_at: list[float] = []

        async def silent(n: int) -> None:
            stream = await through_tunnel(server, header(f"10.0.{n // 250}.{n % 250 + 1}"))
            data = await read_to_eof(stream)
            assert b"too slow to log in" in data
            closed_at.append(trio.current_time() - start)
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(silent, n)
            await trio.sleep(1)
            assert server.ctx.gate._unauth_total == 200
            before = trio.current_time()
            alice = await joined_from(server, ALICE, "alice")
            assert trio.current_time() - before < 0.01
            await alice.say("hi")
            assert (await alice.expect(Message)).text == "hi"  # type: ignore[attr-defined]
        assert len(closed_at) == 200 and all(20 <= t <= 20.5 for t in closed_at)


# -- the header itself --


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"hello"}\n',
        b"PROXY TCP4 203.0.113.5 127.0.0.1 40000\r\n",  # a port missing
        b"PROXY TCP4 203.0.113.500 127.0.0.1 40000 5002\r\n",
        b"PROXY TCP6 203.0.113.5 127.0.0.1 40000 5002\r\n",
        b"PROXY  TCP4 203.0.113.5 127.0.0.1 40000 5002\r\n",  # two spaces
        b"PROXY TCP4 203.0.113.5 127.0.0.1 040000 5002\r\n",  # a leading zero
        b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 5002\n",  # LF only: never a CRLF
        b"PROXY UNKNOWN " + b"x" * MAX_V1_HEADER,  # no CRLF within 107 bytes
        header(ALICE)[:12] + b"\x11" + header(ALICE)[13:],  # v2 signature, version 1
        header(ALICE)[:13] + b"\x12" + header(ALICE)[14:],  # a datagram
        header(ALICE)[:14] + b"\x08\x01" + header(ALICE)[16:],  # longer than v2 allows
    ],
    ids=repr,
)
async def test_a_bad_header_is_dropped_without_a_word(data: bytes) -> None:
    async with tunnel_room() as server:
        with trio.fail_after(10):
            stream = await through_tunnel(server, data)
            assert await read_to_eof(stream) == b""
            assert server.ctx.gate._open == {}  # it never reached the room's gate
            await joined_from(server, ALICE, "alice")  # and the listener goes on


async def test_the_header_has_a_deadline(autojump_clock: object) -> None:
    async with tunnel_room() as server:
        for data in (b"", b"PROXY TCP4 203.0.", header(ALICE)[:20]):
            start = trio.current_time()
            stream = await through_tunnel(server, data)
            assert await read_to_eof(stream) == b""
            assert trio.current_time() - start == pytest.approx(PROXY_HEADER_SECONDS, abs=0.01)


async def test_connections_still_in_their_header_are_capped(autojump_clock: object) -> None:
    async with tunnel_room() as server:
        async with trio.open_nursery() as nursery:
            streams = [await through_tunnel(server, b"") for _ in range(MAX_PENDING_PROXY)]
            await trio.sleep(1)
            extra = await through_tunnel(server, header(ALICE))
            start = trio.current_time()
            assert await read_to_eof(extra) == b""
            assert trio.current_time() - start < 0.01  # dropped at once, not at the deadline
            for stream in streams:
                nursery.start_soon(stream.aclose)
        await trio.sleep(PROXY_HEADER_SECONDS)
        await joined_from(server, ALICE, "alice")


@pytest.mark.parametrize("version", [1, 2])
async def test_bytes_after_the_header_reach_the_chat_protocol(version: int) -> None:
    async with tunnel_room() as server:
        with trio.fail_after(10):
            # Header, hello and a message in one write: nothing past the header is lost.
            assert server.proxy_port is not None
            alice = Peer(await trio.open_tcp_stream("127.0.0.1", server.proxy_port))
            hello = alice.conn.send(Hello("alice", PASSWORD))
            say = b'{"type":"say","text":"first words"}\n'
            await alice.stream.send_all(header(ALICE, version) + hello + say)
            assert isinstance(await alice.next_event(), Welcome)
            assert (await alice.expect(Message)).text == "first words"  # type: ignore[attr-defined]
            # Byte by byte: the header parser reads no further than the header.
            slow = await trio.open_tcp_stream("127.0.0.1", server.proxy_port)
            for byte in header(BOB, version) + f"{PASSWORD}\nbob\n".encode():
                await slow.send_all(bytes([byte]))
            buf = bytearray()
            while b"leave.\n" not in buf:
                buf += await slow.receive_some(1000)
            assert buf.startswith(b"Name: Welcome to multichat, bob!")


async def test_the_lan_port_refuses_a_proxy_header() -> None:
    async with tunnel_room() as server:
        with trio.fail_after(10):
            assert server.port is not None
            hello = wire.encode(Hello("mallory", PASSWORD))
            for data in (header(ALICE, 1) + hello, header(ALICE, 2) + hello, b"PROX"):
                peer = await Peer.open(server.port)
                await peer.stream.send_all(data)  # b"PROX": a header's start is enough
                error = await answer(peer)
                assert error.code == "bad_proxy_header"
            assert server.room.names() == ()
