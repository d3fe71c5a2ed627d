"""Several `multichat serve --backplane redis://...` processes on one real redis-server: one
room, one order, names unique across servers, `who` lists everyone; a server killed with
SIGKILL is shown leaving ("server lost") on the others; Redis stopped and started again under
traffic costs `unavailable` meanwhile and nothing acknowledged; a bad backplane is one line."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from chatpeer import PASSWORD, Peer
from multichat.client.address import Address
from multichat.client.connection import ChatClient
from multichat.protocol.events import Error, Hello, Leave, Members, Message, Say, Who
from redisserver import RedisServer
from servecli import CLI, Server
from servecli import serve as serving

NODE_TIMEOUT = 1.5  # seconds: a killed server's members leave within about 2 of these
STEP = 20


def serve(
    tmp_path: Path, url: str, *, node_timeout: float = NODE_TIMEOUT
) -> AbstractAsyncContextManager[Server]:
    """`multichat serve --backplane URL`, the URL in the variable as a container would set it."""
    return serving(
        tmp_path,
        "--ephemeral",
        config_name="backplane.toml",
        more_config=f"\n[backplane]\nnode_timeout = {node_timeout}\n",
        env={"MULTICHAT_BACKPLANE": url},
    )


@asynccontextmanager
async def several(
    tmp_path: Path, url: str, count: int, *, node_timeout: float = NODE_TIMEOUT
) -> AsyncIterator[list[Server]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                serve(tmp_path / f"s{i}", url, node_timeout=node_timeout)
            )
            for i in range(count)
        ]


async def test_three_servers_one_room_and_one_killed(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"s{i}").mkdir()
    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        async with several(tmp_path, redis.url, 3) as (a, b, c):
            await chat_and_kill(a, b, c)


async def chat_and_kill(a: Server, b: Server, c: Server) -> None:
    try:
        with trio.fail_after(STEP):
            ann = await Peer.join(a.port, "ann")
            bob = await Peer.join(b.port, "bob")
            cat = await Peer.join(c.port, "cat")
            # Names are the backplane's: taken on another server is taken here.
            other = await Peer.open(a.port)
            await other.send(Hello("Bob", PASSWORD))
            taken = await other.expect(Error)
            for peer, name in ((ann, "ann"), (bob, "bob"), (cat, "cat")):
                await peer.say(f"{name} here", name)
            seen: dict[str, list[tuple[int, str]]] = {}
            for peer, name in ((ann, "ann"), (bob, "bob"), (cat, "cat")):
                messages = [await peer.expect(Message) for _ in range(3)]
                seen[name] = [(m.seq, m.text) for m in messages if isinstance(m, Message)]
            await bob.send(Who())
            who = await bob.expect(Members)
        # SIGKILL: no leaves sent; the others reap its members after node_timeout.
        c.process.kill()
        with trio.fail_after(4 * NODE_TIMEOUT + 5):
            lost_a = await ann.expect(Leave)
            lost_b = await bob.expect(Leave)
        with trio.fail_after(STEP):
            await ann.send(Who())
            after = await ann.expect(Members)
    except BaseException:
        for server in (a, b, c):
            print(server.log.decode())  # the servers' logs, for the failure's report
        raise
    assert isinstance(taken, Error) and taken.code == "name_taken"
    # One order: every member saw each message with the same number, on every server.
    assert seen["ann"] == seen["bob"] == seen["cat"]
    assert {text for _, text in seen["ann"]} == {"ann here", "bob here", "cat here"}
    seqs = [seq for seq, _ in seen["ann"]]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert isinstance(who, Members) and set(who.names) == {"ann", "bob", "cat"}
    assert lost_a == lost_b and isinstance(lost_a, Leave)
    assert (lost_a.name, lost_a.reason) == ("cat", "server lost")
    assert isinstance(after, Members) and set(after.names) == {"ann", "bob"}


async def echo_within(peer: Peer, id: str, seen: list[Message]) -> Message | None:
    """The echo with this id, if it comes within a few seconds (other messages go to `seen`)."""
    with trio.move_on_after(3):
        while True:
            event = await peer.next_event()
            if isinstance(event, Message):
                seen.append(event)
                if event.id == id:
                    return event
    return None


async def test_redis_stopped_and_started_under_traffic(tmp_path: Path) -> None:
    """Two servers, a sender on each; Redis stops and starts again. Meanwhile a `say` is
    refused with `unavailable` and resent; after, every acknowledged message is on both
    servers once, with the same numbers, in one order."""
    (tmp_path / "s0").mkdir()
    (tmp_path / "s1").mkdir()
    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        # The default node_timeout: an outage of a second or two reaps nobody.
        async with several(tmp_path, redis.url, 2, node_timeout=15) as (a, b):
            with trio.fail_after(STEP):
                ann = await Peer.join(a.port, "ann")
                bob = await Peer.join(b.port, "bob")
            acked: dict[str, list[Message]] = {"ann": [], "bob": []}
            refused = {"ann": 0, "bob": 0}
            seen: dict[str, list[Message]] = {"ann": [], "bob": []}
            lines = 30

            async def send(peer: Peer, name: str) -> None:
                # One line at a time, as a client does: resent until its echo comes.
                for i in range(lines):
                    text = f"{name} {i}"
                    while True:
                        await peer.send(Say(text, f"{name}{i}"))
                        while True:
                            event = await peer.next_event()
                            if isinstance(event, Message):
                                seen[name].append(event)
                                if event.id == f"{name}{i}":
                                    break
                            elif isinstance(event, Error):
                                assert event.code == "unavailable", event
                                refused[name] += 1
                                if "may have gone through" in event.message:
                                    # Its echo may come yet: wait for it before resending.
                                    echo = await echo_within(peer, f"{name}{i}", seen[name])
                                    if echo is not None:
                                        event = echo
                                        break
                                await trio.sleep(0.1)
                                event = None
                                break
                        if isinstance(event, Message):
                            acked[name].append(event)
                            break
                    await trio.sleep(0.05)

            async def outage() -> None:
                await trio.sleep(0.4)
                await trio.to_thread.run_sync(redis.stop)
                await trio.sleep(1.0)
                await trio.to_thread.run_sync(redis.start)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, ann, "ann")
                    nursery.start_soon(send, bob, "bob")
                    nursery.start_soon(outage)
                # The last lines' echoes on the other side too.
                for peer, name, other in ((ann, "ann", "bob"), (bob, "bob", "ann")):
                    last = f"{other} {lines - 1}"
                    while not any(m.text == last for m in seen[name]):
                        event = await peer.next_event()
                        if isinstance(event, Message):
                            seen[name].append(event)
    assert refused["ann"] + refused["bob"] > 0  # the outage was under traffic
    for name in ("ann", "bob"):
        texts = [m.text for m in seen[name]]
        assert len(texts) == len(set(texts)), "a message came twice"
        seqs = [m.seq for m in seen[name]]
        assert seqs == sorted(seqs), "out of order"
        for mine in acked["ann"] + acked["bob"]:
            assert mine.text in texts, f"{mine.text} lost on {name}'s server"
    by_text = {m.text: m.seq for m in seen["ann"]}
    assert all(by_text.get(m.text, m.seq) == m.seq for m in seen["bob"])


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("redis//h", 2, "bad backplane address 'redis//h'"),
        ("redis://127.0.0.1:{dead}/0", 1, "cannot use the backplane at redis://127.0.0.1:"),
    ],
)
async def test_a_bad_or_unreachable_backplane_is_one_line(
    tmp_path: Path, url: str, code: int, says: str
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # bound, never listening: refused
        env = os.environ | {"MULTICHAT_PASSWORD": PASSWORD, "MULTICHAT_STATE_DIR": str(tmp_path)}
        command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", "0", "--ephemeral"]
        command += ["--backplane", url.format(dead=dead)]
        with trio.fail_after(STEP):
            result = await trio.run_process(
                command, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert err.count("\n") == 1 and err.startswith(f"multichat: {says}"), err


async def test_a_bad_node_timeout_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[backplane]\nnode_timeout = 0\n")
    env = os.environ | {"MULTICHAT_PASSWORD": PASSWORD, "MULTICHAT_STATE_DIR": str(tmp_path)}
    command = [str(CLI), "serve", "--port", "0", "--ephemeral", "--config", str(bad)]
    command += ["--backplane", "redis://127.0.0.1:1/0"]
    with trio.fail_after(STEP):
        result = await trio.run_process(
            command, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"multichat: {bad}: [backplane] node_timeout must be a number of seconds > 0\n"
    )


async def test_the_terminal_client_sends_a_line_refused_as_unavailable_again(
    tmp_path: Path,
) -> None:
    """The issue's promise for clients: a line refused while Redis is away is kept, shown as
    waiting, and sent again; once Redis is back it is said once, and acknowledged."""
    (tmp_path / "s0").mkdir()
    seen: list[object] = []
    refused = trio.Event()

    def listener(event: object) -> None:
        seen.append(event)
        if isinstance(event, Error) and event.code == "unavailable":
            refused.set()

    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        async with serve(tmp_path / "s0", redis.url, node_timeout=15) as server:
            with trio.fail_after(40):
                client = ChatClient(Address("127.0.0.1", server.port), "ann", PASSWORD, listener)
                await client.join()
                bob = await Peer.join(server.port, "bob")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.run)
                    await trio.to_thread.run_sync(redis.stop)
                    client.say_nowait("through the outage")
                    await refused.wait()
                    assert client.pending == 1  # kept, not given up on
                    await trio.to_thread.run_sync(redis.start)
                    heard = [await bob.heard("through the outage")]
                    await client.wait_acknowledged()
                    client.say_nowait("after")
                    while heard[-1].text != "after":
                        event = await bob.expect(Message)
                        assert isinstance(event, Message)
                        heard.append(event)
                    nursery.cancel_scope.cancel()
    echoes = [e for e in seen if isinstance(e, Message) and e.text == "through the outage"]
    assert len(echoes) == 1 and echoes[0].id is not None  # its own echo, once
    # Bob heard it once: nothing between it and the next line.
    assert [m.text for m in heard] == ["through the outage", "after"]
