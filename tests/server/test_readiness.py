"""Members' waits for input on the server's own epoll, over real loopback sockets.

Each test runs twice where the platform has epoll: with it, and with trio's own waits (what
macOS and Windows get), which must behave the same to a session.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from multichat.server import readiness as readiness_module
from multichat.server.readiness import Readiness

MODES = [pytest.param(True, id="epoll"), pytest.param(False, id="trio")]
if sys.platform != "linux":
    MODES = MODES[1:]  # no epoll to test: the other way is the only one there


@pytest.fixture(params=MODES)
def use_epoll(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """An accepted loopback socket (non-blocking, as the server's are) and its peer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    accepted.setblocking(False)
    return accepted, peer


@asynccontextmanager
async def running(use_epoll: bool) -> AsyncIterator[tuple[Readiness, trio.Nursery]]:
    readiness = Readiness(use_epoll=use_epoll)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(readiness.run)
            yield readiness, nursery
            nursery.cancel_scope.cancel()


def read(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return None


async def register(readiness: Readiness, server: socket.socket, use_epoll: bool) -> None:
    """Register `server` and take its first wait, which with epoll only looks."""
    readiness.register(server)
    if use_epoll:
        await readiness.wait_readable(server)
        assert read(server) is None


@asynccontextmanager
async def registered(
    use_epoll: bool,
) -> AsyncIterator[tuple[Readiness, trio.Nursery, socket.socket, socket.socket]]:
    """A running Readiness with one loopback socket registered (its first wait taken)."""
    server, peer = loopback_pair()
    with server, peer:
        async with running(use_epoll) as (readiness, nursery):
            await register(readiness, server, use_epoll)
            yield readiness, nursery, server, peer
            readiness.unregister(server)


class Waiting:
    """A task in `wait_readable`, as a session waits: `woken` once it returned."""

    def __init__(self, readiness: Readiness, sock: socket.socket, nursery: trio.Nursery) -> None:
        self.woken = trio.Event()
        self.cancelled = False
        self.scope = trio.CancelScope()
        nursery.start_soon(self._wait, readiness, sock)

    async def _wait(self, readiness: Readiness, sock: socket.socket) -> None:
        with self.scope:
            await readiness.wait_readable(sock)
            self.woken.set()
        self.cancelled = self.scope.cancelled_caught


async def test_a_wait_ends_when_input_comes(use_epoll: bool) -> None:
    server, peer = loopback_pair()
    with server, peer:
        async with running(use_epoll) as (readiness, nursery):
            readiness.register(server)
            waiting = Waiting(readiness, server, nursery)
            await trio.testing.wait_all_tasks_blocked()
            if use_epoll:
                # Input may have come before the registration: the first wait looks first.
                await waiting.woken.wait()
                assert read(server) is None
                waiting = Waiting(readiness, server, nursery)
                await trio.testing.wait_all_tasks_blocked()
            assert not waiting.woken.is_set()
            peer.sendall(b"hello\n")
            await waiting.woken.wait()
            assert read(server) == b"hello\n"
            readiness.unregister(server)


async def test_input_that_comes_between_waits_is_not_missed(use_epoll: bool) -> None:
    async with registered(use_epoll) as (readiness, _, server, peer):
        # The session is busy (not waiting) when the input comes, and the epoll's task takes
        # the event meanwhile; edge-triggered, it will not come again.
        peer.sendall(b"one\n")
        await trio.testing.wait_all_tasks_blocked()
        await readiness.wait_readable(server)  # returns: fail_after would say otherwise
        assert read(server) == b"one\n"


async def test_a_cancelled_wait_is_taken_back(use_epoll: bool) -> None:
    async with registered(use_epoll) as (readiness, nursery, server, peer):
        waiting = Waiting(readiness, server, nursery)
        await trio.testing.wait_all_tasks_blocked()
        waiting.scope.cancel()  # as a kick cancels a session's reader
        await trio.testing.wait_all_tasks_blocked()
        assert waiting.cancelled and not waiting.woken.is_set()
        # Input for a wait taken back wakes no one (trio would fail on a task woken twice),
        # and the next wait still finds it.
        peer.sendall(b"late\n")
        await trio.testing.wait_all_tasks_blocked()
        await readiness.wait_readable(server)
        assert read(server) == b"late\n"


async def test_the_peer_closing_ends_a_wait(use_epoll: bool) -> None:
    async with registered(use_epoll) as (readiness, nursery, server, peer):
        waiting = Waiting(readiness, server, nursery)
        await trio.testing.wait_all_tasks_blocked()
        peer.close()
        await waiting.woken.wait()
        assert read(server) == b""


async def test_each_of_many_sockets_wakes_its_own_waiter(
    use_epoll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer events a turn than sockets: the rest wait in the epoll for the next turns.
    monkeypatch.setattr(readiness_module, "MAX_EVENTS", 7)
    pairs = [loopback_pair() for _ in range(50)]
    try:
        async with running(use_epoll) as (readiness, nursery):
            for server, _ in pairs:
                await register(readiness, server, use_epoll)
            waiting = [Waiting(readiness, server, nursery) for server, _ in pairs]
            await trio.testing.wait_all_tasks_blocked()
            for i, (_, peer) in enumerate(pairs):
                if i % 2 == 0:
                    peer.sendall(b"%d\n" % i)
            for i, waiter in enumerate(waiting):
                if i % 2 == 0:
                    await waiter.woken.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert [w.woken.is_set() for w in waiting] == [i % 2 == 0 for i in range(50)]
            assert [read(server) for server, _ in pairs[::2]] == [
                b"%d\n" % i for i in range(0, 50, 2)
            ]
            for server, _ in pairs:
                readiness.unregister(server)
    finally:
        for server, peer in pairs:
            server.close()
            peer.close()


async def test_a_socket_not_registered_waits_in_trio() -> None:
    server, peer = loopback_pair()
    with server, peer:
        async with running(True) as (readiness, nursery):
            waiting = Waiting(readiness, server, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert not waiting.woken.is_set()  # no first look: trio's wait is level-triggered
            peer.sendall(b"x")
            await waiting.woken.wait()
            readiness.unregister(server)  # never registered: nothing to do


async def test_waits_go_back_to_trio_when_the_task_ends() -> None:
    server, peer = loopback_pair()
    with server, peer:
        readiness = Readiness(use_epoll=True)
        with trio.fail_after(10):
            async with trio.open_nursery() as outer:
                async with trio.open_nursery() as inner:
                    await inner.start(readiness.run)
                    readiness.register(server)
                    await readiness.wait_readable(server)
                    waiting = Waiting(readiness, server, outer)
                    await trio.testing.wait_all_tasks_blocked()
                    inner.cancel_scope.cancel()  # the server stops its task
                await waiting.woken.wait()  # woken: its next wait is trio's
                assert read(server) is None
                waiting = Waiting(readiness, server, outer)
                await trio.testing.wait_all_tasks_blocked()
                peer.sendall(b"after\n")
                await waiting.woken.wait()
                assert read(server) == b"after\n"
                readiness.unregister(server)


async def test_unregistering_wakes_a_waiter() -> None:
    async with registered(True) as (readiness, nursery, server, _):
        waiting = Waiting(readiness, server, nursery)
        await trio.testing.wait_all_tasks_blocked()
        readiness.unregister(server)
        await waiting.woken.wait()


async def test_without_its_task_the_waits_are_trios() -> None:
    server, peer = loopback_pair()
    with server, peer, trio.fail_after(10):
        readiness = Readiness(use_epoll=True)
        readiness.register(server)  # its task is not running: nothing to register with
        async with trio.open_nursery() as nursery:
            waiting = Waiting(readiness, server, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert not waiting.woken.is_set()  # trio's wait: no first look
            peer.sendall(b"x")
        assert waiting.woken.is_set()
        readiness.unregister(server)
