"""The non-blocking transport on real loopback sockets: sends that never wait, and closing."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from multichat.server.transport import (
    LINGER_SECONDS,
    SEND_BATCH_BYTES,
    SendBatch,
    Transport,
    unacknowledged,
)

# Small kernel buffers make "the peer does not read" block after a few KB, not several MB.
SMALL_BUFFER = 4096


@asynccontextmanager
async def open_pair(*, small: bool = False) -> AsyncIterator[tuple[Transport, trio.SocketStream]]:
    """A Transport on an accepted loopback socket, and a trio stream for its peer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if small:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if small:  # before connecting, so the advertised window is small from the start
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
    transport = Transport(accepted)
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(client))
    try:
        yield transport, peer
    finally:
        if transport.sock.fileno() != -1:
            transport.close()
        await peer.aclose()


def frame(i: int) -> bytes:
    """A distinct 1,000-byte frame, so lost, repeated or reordered bytes show."""
    return b"%06d" % i + b"." * 993 + b"\n"


def fill(transport: Transport) -> list[bytes]:
    """Send frames until the kernel refuses one; the frames sent (bounded at about 1 MB)."""
    frames: list[bytes] = []
    while len(frames) < 1000:
        frames.append(frame(len(frames)))
        if not transport.send_nowait(frames[-1]):
            return frames
    raise AssertionError("the kernel never refused more")


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        assert data, f"EOF after {len(buf)} of {n} bytes"
        buf += data
    return bytes(buf)


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    """Everything until EOF; a reset raises BrokenResourceError and fails the test."""
    buf = bytearray()
    while data := await stream.receive_some(65536):
        buf += data
    return bytes(buf)


def reset(peer: trio.SocketStream) -> None:
    """Close the peer with an RST instead of a FIN."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.socket.close()


async def test_a_small_frame_goes_out_at_once_and_arrives_exactly() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            assert transport.send_nowait(b"hello\n")
            assert not transport.blocked and transport.blocked_since is None
            assert transport.send_nowait(bytearray(b"again\n"))
            assert await read_exactly(peer, 12) == b"hello\nagain\n"


async def test_a_peer_that_does_not_read_blocks_sends_until_drained() -> None:
    with trio.fail_after(5):
        async with open_pair(small=True) as (transport, peer):
            before = trio.current_time()
            frames = fill(transport)
            assert transport.blocked and transport.blocked_since is not None
            since = transport.blocked_since
            assert before <= since <= trio.current_time()
            assert unacknowledged(transport.sock) > 0  # in flight, the peer's window is full
            # Later frames queue behind the refused one, even where the kernel has room for
            # them, so the peer can never see them out of order.
            later = [frame(len(frames) + i) for i in range(20)]
            for data in later:
                assert not transport.send_nowait(data)
            frames += later
            assert transport.pending.endswith(b"".join(later))
            assert transport.blocked_since == since  # since the first refusal, not the last

            expected = b"".join(frames)
            received: list[bytes] = []

            async def read() -> None:
                received.append(await read_exactly(peer, len(expected)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await transport.drain()
                assert not transport.blocked and transport.blocked_since is None
            assert received == [expected]
            assert transport.send_nowait(b"after\n")
            assert await read_exactly(peer, 6) == b"after\n"


async def test_drain_with_nothing_pending_returns_at_once() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, _):
            await transport.drain()
            assert not transport.blocked and not transport.broken


async def test_a_reset_peer_breaks_sends_without_raising() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            reset(peer)
            await trio.lowlevel.wait_readable(transport.sock)  # the RST has arrived
            assert transport.send_nowait(b"lost\n")  # True: nothing waits for a gone peer
            assert transport.broken and not transport.blocked
            assert transport.send_nowait(b"x" * 100_000) and not transport.pending
            with pytest.raises(trio.BrokenResourceError):
                await transport.drain()
            # The send already reported the reset; what is left to read is the end.
            assert await transport.receive_some() == b""


async def test_a_reset_seen_first_by_a_receive_raises_broken() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            reset(peer)
            with pytest.raises(trio.BrokenResourceError):
                await transport.receive_some()
            assert transport.broken
            with pytest.raises(trio.BrokenResourceError):
                await transport.drain()
            await transport.linger_close()  # nothing to linger for: returns at once


async def test_a_reset_while_blocked_makes_drain_raise_and_drops_the_rest() -> None:
    with trio.fail_after(5):
        async with open_pair(small=True) as (transport, peer):
            fill(transport)
            assert not transport.send_nowait(b"queued\n")
            reset(peer)
            with pytest.raises(trio.BrokenResourceError):
                await transport.drain()
            assert transport.broken and not transport.blocked
            assert transport.blocked_since is None
            assert transport.send_nowait(b"more\n") and not transport.pending


async def test_a_peer_that_closed_breaks_sends_once_it_answers_with_a_reset() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            await peer.aclose()
            await trio.lowlevel.wait_readable(transport.sock)  # its FIN has arrived
            assert transport.receive_nowait() == b""
            # The kernel takes the first send; the closed peer answers it with an RST, and
            # a later send finds that. None of them may raise.
            for _ in range(100):
                assert transport.send_nowait(b"into the void\n")
                if transport.broken:
                    break
                await trio.lowlevel.checkpoint()
            assert transport.broken
            with pytest.raises(trio.BrokenResourceError):
                await transport.drain()


async def test_receive_nowait_reports_nothing_then_data_then_eof() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            assert transport.receive_nowait() is None
            await peer.send_all(b"hello")
            await trio.lowlevel.wait_readable(transport.sock)
            assert transport.receive_nowait() == b"hello"
            assert transport.receive_nowait() is None
            await peer.send_all(b"abcdef")
            await peer.send_eof()
            await trio.lowlevel.wait_readable(transport.sock)
            assert transport.receive_nowait(4) == b"abcd"
            assert transport.receive_nowait() == b"ef"
            assert transport.receive_nowait() == b""
            assert transport.receive_nowait() == b""
            assert not transport.broken  # a clean close is not a broken connection


async def test_receive_some_waits_for_data_then_reports_eof() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            received: list[bytes] = []

            async def receive() -> None:
                received.append(await transport.receive_some())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                assert received == []  # waiting, not returning None or b""
                await peer.send_all(b"late")
            assert received == [b"late"]
            await peer.send_all(b"0123456789")
            await trio.lowlevel.wait_readable(transport.sock)
            with trio.testing.assert_checkpoints():  # other connections get their turn
                assert await transport.receive_some(3) == b"012"
            assert await transport.receive_some() == b"3456789"
            await peer.send_eof()
            assert await transport.receive_some() == b""


async def test_linger_close_delivers_everything_then_eof_despite_unread_input() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            # Input we never read: a plain close would answer it with a reset, and the peer
            # would see ECONNRESET instead of the end of our last frames.
            await peer.send_all(b"unread\n" * 100)
            await trio.lowlevel.wait_readable(transport.sock)
            payload = b"".join(frame(i) for i in range(50))
            assert transport.send_nowait(payload)
            await transport.linger_close()
            transport.close()
            assert transport.sock.fileno() == -1
            assert await read_to_eof(peer) == payload


async def test_linger_close_gives_up_on_a_peer_that_takes_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(LINGER_SECONDS * 2):
        async with open_pair(small=True) as (transport, _):
            fill(transport)
            start = trio.current_time()
            await transport.linger_close()
            assert trio.current_time() - start == pytest.approx(LINGER_SECONDS)


async def test_linger_close_returns_at_once_when_the_peer_has_closed_too(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(LINGER_SECONDS * 2):
        async with open_pair(small=True) as (transport, peer):
            fill(transport)  # unacknowledged: only the peer's own close ends the wait
            await peer.send_eof()
            await trio.lowlevel.wait_readable(transport.sock)
            start = trio.current_time()
            await transport.linger_close()
            assert trio.current_time() == start


async def test_linger_close_stops_discarding_a_peer_that_keeps_sending() -> None:
    # Real time: a flood passes LINGER_BYTES in milliseconds, well before LINGER_SECONDS.
    with trio.fail_after(LINGER_SECONDS / 2):
        async with open_pair(small=True) as (transport, peer):
            fill(transport)  # unacknowledged, so only the discard limit ends the wait early

            async def flood() -> None:
                chunk = b"y" * 65536
                while True:
                    await peer.send_all(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await trio.testing.wait_all_tasks_blocked()  # our input buffer is full
                await transport.linger_close()
                nursery.cancel_scope.cancel()


async def test_close_closes_the_socket_and_discards_later_sends() -> None:
    with trio.fail_after(5):
        async with open_pair() as (transport, peer):
            assert transport.send_nowait(b"last\n")
            transport.close()
            assert transport.sock.fileno() == -1
            assert transport.broken
            assert transport.send_nowait(b"discarded\n") and not transport.pending
            with pytest.raises(trio.BrokenResourceError):
                await transport.drain()
            assert await read_to_eof(peer) == b"last\n"


async def test_from_stream_takes_over_an_accepted_trio_socket() -> None:
    with trio.fail_after(5):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listeners[0] as listener:
            port = listener.socket.getsockname()[1]
            async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                accepted = await listener.accept()
                transport = Transport.from_stream(accepted)
                assert accepted.socket.fileno() == -1  # the stream no longer owns it
                assert transport.sock.getpeername() == client.socket.getsockname()
                assert transport.sock.type == socket.SOCK_STREAM
                assert transport.send_nowait(b"from the server\n")
                assert await read_exactly(client, 16) == b"from the server\n"
                await client.send_all(b"from the client\n")
                assert await transport.receive_some() == b"from the client\n"
                transport.close()
                assert await read_to_eof(client) == b""


async def test_a_batch_writes_each_connection_as_send_nowait_would() -> None:
    # One reads along, one has a rest waiting, one cannot take all it is given, one is gone:
    # each gets its bytes in order, or keeps the rest, or discards them, and says so.
    with trio.fail_after(10):
        async with (
            open_pair() as (reading, reader),
            open_pair(small=True) as (waiting, waiter),
            open_pair(small=True) as (filling, filler),
            open_pair() as (gone, goner),
        ):
            before = fill(waiting)  # refused: a rest is pending, and more must queue behind it
            reset(goner)
            gone.send_nowait(b"x" * 100)
            await trio.sleep(0.05)  # the reset arrives
            batch = SendBatch()
            done: dict[str, bool] = {}
            big = b"".join(frame(i) for i in range(200))  # more than a small buffer takes
            for name, transport, data in [
                ("reading", reading, b"hello\n"),
                ("waiting", waiting, b"after\n"),
                ("filling", filling, big),
                ("gone", gone, b"lost\n"),
            ]:
                batch.add(transport, data, lambda taken, name=name: done.__setitem__(name, taken))
            assert len(batch) == 4 and done == {}
            batch.send_nowait()
            assert len(batch) == 0
            assert done == {"reading": True, "waiting": False, "filling": False, "gone": True}
            assert gone.broken
            assert await read_exactly(reader, 6) == b"hello\n"
            assert filling.blocked and filling.blocked_since is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting.drain)
                nursery.start_soon(filling.drain)
                assert await read_exactly(waiter, len(b"".join(before)) + 6) == (
                    b"".join(before) + b"after\n"
                )
                assert await read_exactly(filler, len(big)) == big
            assert not waiting.blocked and not filling.blocked


async def test_a_batch_goes_out_once_it_holds_its_limit() -> None:
    # A flush of join notices to thousands of members must not hold every share at once.
    with trio.fail_after(10):
        async with open_pair(small=True) as (transport, peer):
            batch = SendBatch()
            taken: list[bool] = []
            # Distinct bytes, and more than the socket takes at once: a write to a connection
            # already in the batch goes after the rest of the one before it, never beside it.
            chunks = [bytes([65 + i]) * (SEND_BATCH_BYTES // 4) for i in range(4)]
            for chunk in chunks[:3]:
                batch.add(transport, chunk, taken.append)
            assert len(batch) == 3 and taken == []
            batch.add(transport, chunks[3], taken.append)  # the fourth reaches the limit
            assert len(batch) == 0 and len(taken) == 4
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.drain)
                assert await read_exactly(peer, SEND_BATCH_BYTES) == b"".join(chunks)
