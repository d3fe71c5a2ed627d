"""Pipe mode end to end: the real `multichat connect --plain` in a subprocess, a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from chatpeer import PASSWORD, RELAXED, Peer, start_room
from multichat.protocol.events import Join, Leave, Message, Moderate, Renamed, Say, WentAway
from multichat.server.listeners import ChatServer
from multichat.server.moderation import HOST

LOCAL = "127.0.0.1"
# A subprocess imports trio, typer and urwid before it does anything: allow for a slow machine.
PROCESS_SECONDS = 20


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "multichat", "connect", *args]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTICHAT_")}
    env.update(PYTHONIOENCODING="utf-8", **extra)
    return env


async def run(*args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PROCESS_SECONDS):
        return await trio.run_process(
            command(*args),
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environment(**env),
        )


class Lines:
    """A subprocess's stdout, read up to a line that matches."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""

    async def until(self, pattern: str) -> str:
        while (found := re.search(pattern, self.text, re.MULTILINE)) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                raise AssertionError(f"output ended before {pattern!r}: {self.text!r}")
            self.text += data.decode("utf-8")
        return found.group(0)

    async def rest(self) -> str:
        while data := await self.stream.receive_some(65536):
            self.text += data.decode("utf-8")
        return self.text


@asynccontextmanager
async def client_process(port: int, name: str = "alice") -> AsyncIterator[trio.Process]:
    process = await trio.lowlevel.open_process(
        command(f"{LOCAL}:{port}", "--name", name, "--plain"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(MULTICHAT_PASSWORD=PASSWORD),
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_lines_in_lines_out_all_acknowledged() -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room:
            bob = await room.join("bob")
            result = await run(
                f"{LOCAL}:{room.port}",
                "--name",
                "alice",
                stdin=("hello bob\n\nsecond line\n" + "x" * 4001 + "\nnaïve café ☕\n").encode(),
                MULTICHAT_PASSWORD=PASSWORD,
            )
            assert result.returncode == 0, result.stderr
            assert result.stderr == b""
            out = result.stdout.decode("utf-8").splitlines()
            assert out[0] == "* Welcome to multichat, alice! Online (2): bob, alice"
            assert out[1] == "* bob joined"  # the room's recent history comes first
            assert "! not sent (4001 characters; at most 4000)" in out
            said = [re.sub(r"^\[\d\d:\d\d\] ", "", line) for line in out[2:] if line[0] == "["]
            assert said == ["alice: hello bob", "alice: second line", "alice: naïve café ☕"]
            heard = [await bob.expect(Message) for _ in range(3)]
            assert [m.text for m in heard if isinstance(m, Message)] == [
                "hello bob",
                "second line",
                "naïve café ☕",
            ]
            leave = await bob.expect(Leave)
            assert isinstance(leave, Leave) and leave.reason == "quit"
            await bob.aclose()


async def test_events_from_others_are_plain_lines() -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room:
            bob = await room.join("bob")
            async with client_process(room.port) as process:
                assert process.stdin is not None and process.stdout is not None
                out = Lines(process.stdout)
                await out.until(r"^\* Welcome")
                await bob.expect(Join)
                await bob.say("hi \x1b[2Jalice\x1b]0;title\x07")
                line = await out.until(r"^\[\d\d:\d\d\] bob: .*$")
                assert line.endswith("] bob: hi [2Jalice]0;title")
                await process.stdin.send_all(b"/who\n")
                await out.until(r"^\* Online \(2\): bob, alice$")
                carol = await room.join("carol")
                await out.until(r"^\* carol joined$")
                await carol.aclose()
                await out.until(r"^\* carol left \(disconnected\)$")
                await process.stdin.send_all(b"/nonsense\n")
                await out.until(r"^! unknown command /nonsense; /help lists them$")
                await process.stdin.aclose()
                text = await out.rest()
                assert await process.wait() == 0
            await bob.aclose()
            assert "\x1b" not in text and "\x07" not in text


async def test_room_shutdown_exits_zero() -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room, client_process(room.port) as process:
            assert process.stdout is not None
            out = Lines(process.stdout)
            await out.until(r"^\* Welcome")
            room.server.shutdown_nowait("see you tomorrow")
            await out.until(r"^\* The room is closing: see you tomorrow$")
            await out.until(r"^The room closed: see you tomorrow$")
            assert await process.wait() == 0


async def _serve_in(
    server: ChatServer,
    port: int,
    scope: trio.CancelScope,
    stopped: trio.Event,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        with scope:
            await server.serve(port, LOCAL, task_status=task_status)
    finally:
        stopped.set()


async def test_reconnect_after_server_restart_loses_nothing() -> None:
    with trio.fail_after(PROCESS_SECONDS + 10):
        async with trio.open_nursery() as nursery:
            first_scope = trio.CancelScope()
            first_stopped = trio.Event()
            port = await nursery.start(
                _serve_in, ChatServer(PASSWORD, limits=RELAXED), 0, first_scope, first_stopped
            )
            async with client_process(port) as process:
                assert process.stdin is not None and process.stdout is not None
                out = Lines(process.stdout)
                await out.until(r"^\* Welcome")
                await process.stdin.send_all(b"before\n")
                await out.until(r"alice: before$")

                first_scope.cancel()  # the server vanishes without a notice
                await out.until(r"^\* the server closed the connection; reconnecting in")
                await process.stdin.send_all(b"while away 1\nwhile away 2\n")
                # The client can see its connection close before the old server has closed
                # its listener: a restarted server binds the port once the old one is gone.
                await first_stopped.wait()
                second = ChatServer(PASSWORD, limits=RELAXED)
                await nursery.start(second.serve, port, LOCAL)
                bob = await Peer.join(port, "bob")
                await out.until(r"^\* Reconnected to multichat as alice$")
                await process.stdin.aclose()  # end of input: wait for the echoes, then quit
                heard = [await bob.expect(Message) for _ in range(2)]
                assert [m.text for m in heard if isinstance(m, Message)] == [
                    "while away 1",
                    "while away 2",
                ]
                text = await out.rest()
                assert await process.wait() == 0
                assert text.count("alice: while away 1") == 1
                assert text.index("alice: while away 2") > text.index("Reconnected")
                await bob.aclose()
                second.shutdown_nowait("test over")


# -- errors: one line on stderr, a documented exit code, never a traceback --


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode("utf-8")
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def test_wrong_password_exits_3() -> None:
    async with start_room() as room:
        result = await run(f"{LOCAL}:{room.port}", "--name", "a", "--password", "nope")
    assert result.returncode == 3
    assert one_line(result) == "multichat: wrong password"


async def test_name_taken_exits_3() -> None:
    async with start_room() as room:
        holder = await room.join("alice")
        result = await run(
            f"{LOCAL}:{room.port}", MULTICHAT_NAME="Alice", MULTICHAT_PASSWORD=PASSWORD
        )
        await holder.aclose()
    assert result.returncode == 3
    assert "taken" in one_line(result)


async def test_connection_refused_exits_1() -> None:
    listener = trio.socket.socket()
    await listener.bind((LOCAL, 0))
    port = listener.getsockname()[1]
    listener.close()
    result = await run(f"tcp://{LOCAL}:{port}", "--name", "a", "--password", "b")
    assert result.returncode == 1
    assert one_line(result).startswith(f"multichat: connection refused by {LOCAL}:{port}")


async def test_not_a_multichat_server_exits_1() -> None:
    async def ssh(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")
            await trio.sleep(5)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, ssh, 0)
        port = listeners[0].socket.getsockname()[1]
        result = await run(f"{LOCAL}:{port}", "--name", "a", "--password", "b")
        nursery.cancel_scope.cancel()
    assert result.returncode == 1
    assert one_line(result) == f"multichat: {LOCAL}:{port} is not a multichat server"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ftp://example.com"], "cannot use ftp://; use https://"),
        (["host:99999"], "between 1 and 65535"),
        ([f"{LOCAL}:5002"], "no terminal to ask on: pass --name"),
        ([f"{LOCAL}:5002", "--name", "a"], "pass --password (or MULTICHAT_PASSWORD)"),
    ],
)
async def test_usage_errors_exit_2(args: list[str], says: str) -> None:
    result = await run(*args)
    assert result.returncode == 2
    assert says in one_line(result)


# -- the chat's commands, typed in pipe mode, and their one-line forms --

TIME = r"^\[\d\d:\d\d\] "


async def test_chat_commands_and_their_lines() -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room:
            bob = await room.join("bob")
            async with client_process(room.port) as process:
                assert process.stdin is not None and process.stdout is not None
                out = Lines(process.stdout)

                async def typed(line: str, expect: str) -> str:
                    await process.stdin.send_all(line.encode() + b"\n")  # type: ignore[union-attr]
                    return await out.until(expect)

                await out.until(r"^\* Welcome")
                await bob.expect(Join)
                await typed("/msg bob psst", TIME + r"alice -> bob: psst$")
                heard = await bob.expect(Message)
                assert isinstance(heard, Message) and (heard.text, heard.to) == ("psst", "bob")
                await bob.send(Say("hi alice", to="alice"))
                await bob.expect(Message)  # its echo
                await out.until(TIME + r"bob -> alice: hi alice$")
                await typed("/me waves", TIME + r"\* alice waves$")
                heard = await bob.expect(Message)
                assert isinstance(heard, Message) and heard.action
                await typed("/away lunch", r"^\* alice is away: lunch$")
                assert await bob.expect(WentAway) == WentAway("alice", "lunch")
                await typed("/back", r"^\* alice is back$")
                await typed("/nick alicia", r"^\* alice is now known as alicia$")
                renamed = await bob.expect(Renamed)
                assert isinstance(renamed, Renamed) and renamed.new == "alicia"
                await typed(
                    "/msg zed hi", r"^! not sent \(nobody called 'zed' is in the room\): hi$"
                )
                await typed("/kick bob", r"^! /kick is for operators; ask the host$")
                await typed("/msg", r"^! usage: /msg NAME TEXT")
                room.server.rooms.default.moderation.command(
                    HOST, Moderate("op", "alicia"), by_host=True
                )
                await out.until(r"^\* host made alicia an operator$")
                await typed("/topic movie night", r"^\* alicia set the topic: movie night$")
                await typed("/mute bob --for 10m", r"^\* alicia muted bob for 10m$")
                await typed("/bans", r"^\* No bans\.$")
                await typed("/who", r"^\* Online \(2\): bob, alicia \(op\)$")
                await typed("/help", r"^\* /kick NAME \[REASON\]: remove NAME from the room$")
                await process.stdin.aclose()
                text = await out.rest()
                assert await process.wait() == 0
            assert text.count("alicia muted bob") == 1, "the operator hears it once"
            await bob.aclose()


async def test_kicked_exits_4_without_reconnecting() -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room, client_process(room.port) as process:
            assert process.stdout is not None and process.stderr is not None
            out = Lines(process.stdout)
            await out.until(r"^\* Welcome")
            room.server.rooms.default.moderation.command(
                HOST, Moderate("kick", "alice", "too loud"), by_host=True
            )
            await out.until(r"^! you were kicked by host: too loud$")
            assert await process.wait() == 4
            assert "reconnecting" not in await out.rest()
            err = (await process.stderr.receive_some(65536)).decode()
            assert err == "multichat: you were kicked by host: too loud\n"
