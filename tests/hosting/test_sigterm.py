"""The real `multichat serve` in a subprocess: SIGTERM under load, a SIGSTOPped client, memory.

Every client is on 127.0.0.1, so each test passes a `--config` file that lifts the per-source
and flood limits, and only those, unless the test is about another one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from chatpeer import PASSWORD, Peer
from multichat.protocol.events import ConnectionClosed, Error, Event, Leave, Message, Shutdown
from servecli import serve

# -- SIGTERM in the middle of heavy traffic --


@dataclass
class Member:
    name: str
    peer: Peer
    received: list[Message] = field(default_factory=list)
    others: list[Event] = field(default_factory=list)  # everything but messages
    acked: int = 0  # own messages echoed back: accepted by the room
    sent: int = 0
    done: bool = False


async def _talk(member: Member, size: int, window: int) -> None:
    """Read everything until the connection closes; meanwhile send, `window` unacked at most."""
    more = trio.Event()

    async def read() -> None:
        nonlocal more
        while True:
            event = await member.peer.next_event()
            if isinstance(event, ConnectionClosed):
                member.done = True
                more.set()
                return
            if isinstance(event, Message):
                member.received.append(event)
                if event.sender == member.name:
                    member.acked += 1
                    more.set()
                    more = trio.Event()
            else:
                member.others.append(event)

    async def send() -> None:
        while not member.done:
            if member.sent - member.acked >= window:
                await more.wait()
                continue
            text = f"{member.name}:{member.sent}:" + "x" * size
            try:
                await member.peer.say(text, id=str(member.sent))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            member.sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await read()
        nursery.cancel_scope.cancel()


async def test_sigterm_under_load_delivers_everything_accepted(tmp_path: Path) -> None:
    # Eight members in one test process share two cores with the server: room for a reader
    # that falls behind for a moment, so nobody is dropped as too slow.
    async with serve(tmp_path, outbox_bytes=1024 * 1024) as server:
        with trio.fail_after(60):
            members = []
            for n in range(8):
                members.append(Member(f"m{n}", await Peer.join(server.port, f"m{n}")))
            async with trio.open_nursery() as nursery:
                for n, member in enumerate(members):
                    nursery.start_soon(_talk, member, 200 + 100 * n, 16)
                await trio.sleep(1.5)
                server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await server.process.wait() == 0
    accepted = len(members[0].received)
    assert accepted > 500  # heavy traffic indeed
    reference = [(m.seq, m.sender, m.text) for m in members[0].received]
    assert [seq for seq, _, _ in reference] == list(range(1, accepted + 1))
    for member in members:
        # Everything accepted, exactly once, in room order, then the notice, then the close.
        assert [(m.seq, m.sender, m.text) for m in member.received] == reference, member.name
        assert member.others[-1] == Shutdown("the host stopped the room"), member.name
        for event in member.others[:-1]:  # only joins and the odd refusal after the close
            assert not isinstance(event, Leave), (member.name, event)
            if isinstance(event, Error):
                assert event.code == "shutting_down", event
        # The sender's own messages came back in the order it sent them, acknowledged by id.
        mine = [m for m in member.received if m.sender == member.name]
        assert [m.id for m in mine] == [str(n) for n in range(len(mine))]
    assert sum(m.acked for m in members) == accepted
    assert b"Traceback" not in server.log


# -- a client stopped with SIGSTOP --

STOPPED_CLIENT = textwrap.dedent(
    """
    import json, socket, sys
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(sys.argv[1])))
    hello = {"type": "hello", "version": 1, "name": "stopped", "password": sys.argv[2]}
    sock.sendall(json.dumps(hello).encode() + b"\\n")
    data = b""
    while b"\\n" not in data:
        data += sock.recv(4096)
    assert json.loads(data.split(b"\\n")[0])["type"] == "welcome", data
    print("joined", flush=True)
    sys.stdin.readline()  # stopped here; continued, it is told to look at its connection
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
        print("closed by the server after", total, flush=True)
    except ConnectionResetError:
        print("reset by the server after", total, flush=True)
    """
)


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, line
        line += chunk
    return line


async def test_a_stopped_client_is_dropped_at_its_outbox_limit(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        client = await trio.lowlevel.open_process(
            [sys.executable, "-c", STOPPED_CLIENT, str(server.port), PASSWORD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert client.stdout is not None and client.stdin is not None
            with trio.fail_after(60):
                assert await read_line(client.stdout) == b"joined\n"
                os.kill(client.pid, signal.SIGSTOP)
                sender = await Peer.join(server.port, "sender")
                readers = [await Peer.join(server.port, f"reader{n}") for n in range(2)]
                leaves: list[tuple[str, str]] = []
                counts: dict[str, int] = {}
                echoed = trio.Event()  # the sender's own messages came back
                dropped = trio.Event()
                paste = "y" * 4000
                total = 2000  # 8 MB: more than the kernel buffers of a stopped reader

                async def read(peer: Peer, name: str, expected: int) -> None:
                    n = 0
                    while n < expected:
                        event = await peer.next_event()
                        assert not isinstance(event, ConnectionClosed), name
                        if isinstance(event, Message):
                            n += 1
                            counts[name] = n
                            if name == "sender":
                                echoed.set()
                        elif isinstance(event, Leave) and name == "reader0":
                            leaves.append((event.name, event.reason))
                            dropped.set()

                async with trio.open_nursery() as nursery:
                    for n, peer in enumerate(readers):
                        nursery.start_soon(read, peer, f"reader{n}", total + 1)
                    nursery.start_soon(read, sender, "sender", total + 1)
                    for n in range(total):
                        while n - counts.get("sender", 0) >= 10:  # paced by its own echoes
                            echoed = trio.Event()
                            await echoed.wait()
                        await sender.say(paste)
                    await dropped.wait()
                    await sender.say("the room goes on")
                assert leaves == [("stopped", "too slow")]
                assert counts == {"sender": total + 1, "reader0": total + 1, "reader1": total + 1}
                os.kill(client.pid, signal.SIGCONT)
                await client.stdin.send_all(b"go\n")
                report = await read_line(client.stdout)
                assert report.startswith((b"closed by the server", b"reset by the server"))
                assert await client.wait() == 0
        finally:
            if client.returncode is None:
                os.kill(client.pid, signal.SIGCONT)
                client.kill()
                with trio.move_on_after(5):
                    await client.wait()


# -- 10 MB without a newline --


async def _no_newline(port: int, start: bytes, member: str | None = None) -> int:
    """Send up to 10 MB without a newline; return how much went out before the close."""
    if member is not None:
        stream = (await Peer.join(port, member)).stream
    else:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    chunk = b"z" * 65536
    sent = 0
    try:
        await stream.send_all(start)
        while sent < 10 * 1024 * 1024:
            await stream.send_all(chunk)
            sent += len(chunk)
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return sent


@pytest.mark.parametrize("connections", [1, 10])
async def test_ten_megabytes_without_a_newline_are_refused_in_flat_memory(
    tmp_path: Path, connections: int
) -> None:
    async with serve(tmp_path) as server:
        with trio.fail_after(60):
            # Warm up: a join, a message, a refused line, so every code path is loaded.
            warm = await Peer.join(server.port, "warm")
            await warm.say("hello")
            await warm.expect(Message)
            await _no_newline(server.port, b"{")
            await trio.sleep(0.5)
            rss, peak = server.rss_kib(), server.rss_kib("VmHWM")
            sent: list[int] = []

            async def attack(start: bytes, member: str | None = None) -> None:
                sent.append(await _no_newline(server.port, start, member))

            async with trio.open_nursery() as nursery:
                for n in range(connections):
                    nursery.start_soon(attack, b"{")  # JSON, before logging in
                    nursery.start_soon(attack, b"x")  # plain text, before logging in
                    nursery.start_soon(attack, b'{"type":"say","text":"', f"blob{n}")
            # Every connection was closed long before 10 MB got through.
            assert all(s < 10 * 1024 * 1024 for s in sent), sent
            await trio.sleep(0.5)
            assert server.rss_kib() - rss < 5 * 1024
            assert server.rss_kib("VmHWM") - peak < 5 * 1024
            # And the room is fine.
            await warm.say("still here")
            assert (await warm.expect(Message)).text == "still here"  # type: ignore[attr-defined]
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
