"""Servers joining a backplane, and the end of the ones that die: a real redis-server, real
processes killed with SIGKILL or frozen with SIGSTOP, and a node_timeout cut short."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import backplanenode
from backplanenode import Node, running
from multichat.server.backplane import Backplane, BackplaneEntry, BackplaneError, parse_address
from multichat.server.backplane_codec import Keys
from multichat.server.history_entries import LEAVE
from redisserver import RedisServer

# Short enough for a test, long enough that a loaded machine's beats (every third of it) are
# not taken for deaths.
TIMEOUT = 1.5


@pytest.fixture
def namespace() -> str:
    return f"test-{secrets.token_hex(4)}"


class ServerProcess:
    """A backplane node in a process of its own (tests/backplanenode.py)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = process.stdout
        self._buffer = b""

    async def line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stdout.receive_some()
            if not data:
                raise EOFError("the server process ended")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)


@asynccontextmanager
async def server_process(
    url: str, namespace: str, node_id: str, *members: str
) -> AsyncIterator[ServerProcess]:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            str(Path(backplanenode.__file__)),
            "--node-timeout",
            str(TIMEOUT),
            "--node-id",
            node_id,
            url,
            namespace,
            *members,
        ],
        stdout=subprocess.PIPE,
    )
    server = ServerProcess(process)
    try:
        with trio.fail_after(30):
            assert await server.line() == "ready"
        yield server
    finally:
        if process.returncode is None:
            process.kill()  # our own child, by its pid
            os.kill(process.pid, signal.SIGCONT)
        with trio.CancelScope(shield=True):
            await process.wait()


def leaves(node: Node, room: str) -> list[tuple[str, str]]:
    return [(e.entry.sender, e.entry.text) for e in node.recorder.entries[room] if is_leave(e)]


def is_leave(entry: BackplaneEntry) -> bool:
    return entry.entry.type == LEAVE


def count_leaves(entries: list[BackplaneEntry]) -> int:
    return sum(map(is_leave, entries))


async def test_a_server_killed_is_reaped_once_within_node_timeout(
    redis_server: RedisServer, namespace: str
) -> None:
    url = redis_server.url
    async with (
        running(url, namespace, node_timeout=TIMEOUT) as a,
        running(url, namespace, node_timeout=TIMEOUT) as b,
    ):
        for node in (a, b):
            await node.backplane.open_room("den", history=0)
            await node.backplane.open_room("other", history=0)
        async with server_process(
            url, namespace, "doomed", "den/carol", "den/dave", "other/erin"
        ) as c:
            c.signal(signal.SIGKILL)
            killed = trio.current_time()
            with trio.fail_after(TIMEOUT * 4 + 5):
                for node in (a, b):
                    await node.recorder.wait_for("den", lambda es: count_leaves(es) >= 2)
                    await node.recorder.wait_for("other", lambda es: count_leaves(es) >= 1)
            # the first beat after the timeout reaps: within a beat interval of it, and slack
            assert trio.current_time() - killed < TIMEOUT + TIMEOUT / 3 + 2
            await trio.sleep(TIMEOUT)  # both survivors look again: nothing more may come
        for node in (a, b):
            assert sorted(leaves(node, "den")) == [
                ("carol", "server lost"),
                ("dave", "server lost"),
            ]
            assert leaves(node, "other") == [("erin", "server lost")]
        assert a.recorder.entries == b.recorder.entries
        # the names are free, and the dead server is forgotten
        await a.backplane.seats.join("den", "carol")
        await b.backplane.seats.join("other", "erin")
        keys = Keys(namespace)
        assert redis_server.command("HEXISTS", keys.nodes, "doomed") == b":0"
        assert redis_server.command("EXISTS", keys.seats("doomed")) == b":0"


async def test_a_server_taken_for_dead_finds_out_and_its_members_join_again(
    redis_server: RedisServer, namespace: str
) -> None:
    url = redis_server.url
    async with running(url, namespace, node_timeout=TIMEOUT) as a:
        await a.backplane.open_room("den", history=0)
        async with server_process(url, namespace, "frozen", "den/carol", "den/dave") as c:
            c.signal(signal.SIGSTOP)  # a pause longer than node_timeout: it looks dead
            with trio.fail_after(TIMEOUT * 4 + 5):
                await a.recorder.wait_for("den", lambda es: count_leaves(es) >= 2)
            c.signal(signal.SIGCONT)
            with trio.fail_after(TIMEOUT * 2 + 5):
                assert await c.line() == "lost carol dave"
            # it beats again, and is not reaped a second time
            await trio.sleep(TIMEOUT)
            assert sorted(leaves(a, "den")) == [("carol", "server lost"), ("dave", "server lost")]
            keys = Keys(namespace)
            assert redis_server.command("HEXISTS", keys.nodes, "frozen") == b":1"


async def test_every_server_of_a_backplane_needs_the_same_password(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace, password="correct horse"):
        with trio.fail_after(10), pytest.raises(BackplaneError) as caught:
            async with running(redis_server.url, namespace, password="battery staple"):
                pass
        message = str(caught.value)
        assert "another room password" in message and "\n" not in message
        async with running(redis_server.url, namespace, password="correct horse"):
            pass
    stored = redis_server.command("HGET", Keys(namespace).password, "digest")
    assert stored.startswith(b"scrypt:") and b"horse" not in stored


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


async def test_an_unreachable_redis_is_one_line_at_start() -> None:
    port = closed_port()
    backplane = Backplane(
        parse_address(f"redis://127.0.0.1:{port}/0"), on_entries=lambda r, e: None
    )
    with trio.fail_after(15), pytest.raises(BackplaneError) as caught:
        await backplane.run()
    message = str(caught.value)
    assert message.startswith(f"cannot use the backplane at redis://127.0.0.1:{port}/0: ")
    assert "\n" not in message


async def test_a_redis_that_refuses_the_login_is_one_line_at_start(
    redis_server: RedisServer,
) -> None:
    # (the default user of a Redis without `requirepass` takes any password: an unknown user)
    url = redis_server.url.replace("redis://", "redis://nobody:not-the-password@")
    backplane = Backplane(parse_address(url), on_entries=lambda r, e: None)
    with trio.fail_after(15), pytest.raises(BackplaneError) as caught:
        await backplane.run()
    message = str(caught.value)
    assert "redis://***@127.0.0.1" in message and "not-the-password" not in message
    assert "\n" not in message


async def test_a_server_whose_members_were_reaped_while_it_beat_on_finds_out(
    redis_server: RedisServer, namespace: str
) -> None:
    # Reaped between two of its beats, and beating again before the others forget it: its
    # record never went away, but Redis holds fewer of its seats than it thinks.
    async with running(redis_server.url, namespace, node_timeout=0.6) as a:
        alice = await a.backplane.seats.join("den", "alice")
        bob = await a.backplane.seats.join("den", "bob")
        seats = Keys(namespace).seats(a.backplane.node_id)
        assert redis_server.command("HDEL", seats, alice.token) == b":1"
        with trio.fail_after(5):
            await a.wait_lost(1)
        assert a.lost == [alice] and a.backplane.seats.held() == [bob]
        async with running(redis_server.url, namespace) as b:
            await b.backplane.seats.join("den", "alice")  # its name was released with its seat
