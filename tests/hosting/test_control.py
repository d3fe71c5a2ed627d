"""`multichat status` and `down`, and the state file they find the room by.

The room is a real server in this process; the processes `down` waits for and signals are
`sleep`s this test starts, so no signal ever reaches anything else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import platformdirs
import pytest
import trio

from chatpeer import Peer, start_room
from multichat.hosting import control, statefile
from multichat.hosting.control import ControlError, StatusReport, format_status
from multichat.hosting.statefile import (
    RoomState,
    pid_alive,
    read_state,
    remove_state,
    running_rooms,
    state_dir,
    state_path,
    write_state,
)
from multichat.protocol.events import (
    ConnectionClosed,
    Control,
    Error,
    Hello,
    Leave,
    Members,
    Notice,
    RoomInfo,
    Shutdown,
    Status,
    Topic,
    Welcome,
    Who,
)

MULTICHAT = Path(sys.executable).parent / "multichat"
CONTROL_TOKEN = "control-token-for-tests"
LINK = "https://a1b2-203-0-113-7.ngrok-free.app"
STEP = 20  # seconds for any one step


@pytest.fixture(autouse=True)
def states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(directory))
    return directory


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    sleeper = subprocess.Popen(["sleep", "0"])
    sleeper.wait()
    return sleeper.pid


def dead_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def room_state(port: int, pid: int | None = None, **changes: object) -> RoomState:
    state = RoomState(
        pid=os.getpid() if pid is None else pid,
        port=port,
        token=CONTROL_TOKEN,
        room="den",
        started=1.0,
        lan=["192.0.2.7"],
        https=LINK,
        tcp="tcp://0.tcp.ngrok.io:12345",
        version="0.1.0",
        host="127.0.0.1",
    )
    return replace(state, **changes)  # type: ignore[arg-type]


class Sleeper:
    """A `sleep` child standing in for the room's process; reaped as soon as it exits."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.exited = trio.Event()

    async def reap(self) -> None:
        await self.process.wait()
        self.exited.set()


StartSleeper = Callable[..., Awaitable[Sleeper]]


@pytest.fixture
async def sleepers() -> AsyncIterator[StartSleeper]:
    started: list[Sleeper] = []
    async with trio.open_nursery() as nursery:

        async def start(*command: str, stdout: int | None = None) -> Sleeper:
            process = await trio.lowlevel.open_process(
                list(command or ("sleep", "60")), stdout=stdout
            )
            sleeper = Sleeper(process)
            started.append(sleeper)
            nursery.start_soon(sleeper.reap)
            return sleeper

        try:
            yield start
        finally:
            for sleeper in started:
                if sleeper.process.returncode is None:
                    sleeper.process.kill()  # this pid only
        nursery.cancel_scope.cancel()


async def multichat(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(STEP):
        return await trio.run_process(
            [str(MULTICHAT), *args],
            capture_stdout=True,
            capture_stderr=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )


# --------------------------------------------------------------------------- the state file


def test_the_state_file_is_private_and_holds_no_password(states: Path) -> None:
    state = room_state(5002)
    path = write_state(state)
    assert path == state_path(5002) == states / "room-5002.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert states.stat().st_mode & 0o777 == 0o700
    assert read_state(path) == state
    assert set(json.loads(path.read_text())) == {
        "pid",
        "port",
        "token",
        "room",
        "started",
        "lan",
        "https",
        "tcp",
        "version",
        "host",
        "fingerprint",
        "pidns",
    }
    write_state(replace(state, https=None, tcp=None))
    assert read_state(path) == replace(state, https=None, tcp=None)
    assert sorted(p.name for p in states.iterdir()) == ["room-5002.json"], "no temporary files"


def test_a_state_file_from_before_the_https_link_still_reads(states: Path) -> None:
    # Then the only public address was the TCP one, under `public`.
    state = room_state(5002, https=None)
    path = write_state(state)
    data = json.loads(path.read_text())
    del data["https"], data["tcp"]
    path.write_text(json.dumps({**data, "public": "tcp://0.tcp.ngrok.io:12345"}))
    assert read_state(path) == state
    del data["pidns"]
    path.write_text(json.dumps({**data, "public": None}))
    assert read_state(path) == replace(state, tcp=None, pidns="")


def test_state_dir_falls_back_when_there_is_no_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(statefile.STATE_DIR_ENV)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(
        platformdirs, "user_runtime_dir", lambda *a, **k: str(blocker / "multichat")
    )
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert state_dir() == tmp_path / "tmp" / f"multichat-{os.getuid()}"
    monkeypatch.setattr(platformdirs, "user_runtime_dir", lambda *a, **k: str(tmp_path / "run"))
    assert state_dir() == tmp_path / "run"


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_RUNTIME_DIR is a Linux convention")
def test_no_runtime_dir_means_no_warning_for_the_user(tmp_path: Path) -> None:
    """Over ssh and in containers XDG_RUNTIME_DIR is unset: nothing but our own words show."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", statefile.STATE_DIR_ENV)
    }
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [str(MULTICHAT), "status"], env=env, capture_output=True, text=True, timeout=STEP
    )
    assert done.returncode == 3, done.stderr
    assert "Warning" not in done.stderr and "File " not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr


@pytest.mark.parametrize(
    "content", [b"", b"not json", b"[]", b'{"pid": 1}', b'{"pid": "x", "port": 1, "token": ""}']
)
def test_an_unreadable_state_file_is_no_room(states: Path, content: bytes) -> None:
    states.mkdir()
    path = states / "room-5002.json"
    path.write_bytes(content)
    assert read_state(path) is None
    assert running_rooms() == []
    assert not path.exists(), "an unreadable file is removed"


def test_a_stale_file_from_a_dead_process_is_removed(states: Path) -> None:
    live = write_state(room_state(5002))
    stale = write_state(room_state(5003, pid=dead_pid()))
    assert [r.port for r in running_rooms()] == [5002]
    assert live.exists() and not stale.exists()
    assert running_rooms() == [room_state(5002)]


def test_remove_state_leaves_another_process_file_alone(states: Path) -> None:
    path = write_state(room_state(5002, pid=os.getpid() + 1_000_000))
    remove_state(5002, os.getpid())
    assert path.exists()
    remove_state(5002, os.getpid() + 1_000_000)
    assert not path.exists()
    remove_state(5002)  # already gone: fine


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0) and not pid_alive(-1)


def test_format_status_says_members_uptime_and_addresses() -> None:
    status = Status("den", ("ann", "bob"), 3725.9, "0.1.0")
    text = format_status(StatusReport(room_state(5002), status))
    assert text.splitlines() == [
        f"Room 'den' is up (pid {os.getpid()}, port 5002, multichat 0.1.0).",
        "Uptime: 1h 02m 05s",
        "Members online (2): ann, bob",
        f"Public: {LINK}",
        "TCP:    tcp://0.tcp.ngrok.io:12345",
        "LAN:    192.0.2.7:5002",
    ]
    free_plan = format_status(StatusReport(room_state(5002, tcp=None), status))
    assert f"Public: {LINK}" in free_plan and "TCP" not in free_plan
    alone = room_state(5002, https=None, tcp=None)
    empty = format_status(StatusReport(alone, replace(status, members=())))
    assert "Members online (0): -" in empty and "Public: (no tunnel)" in empty
    old = format_status(StatusReport(room_state(5002, https=None), status))
    assert "Public" not in old and "TCP:    tcp://0.tcp.ngrok.io:12345" in old


# --------------------------------------------------------------------------- status and down


async def test_status_asks_the_room_with_the_token() -> None:
    async with start_room(control_token=CONTROL_TOKEN) as room:
        ann = await room.join("ann")
        write_state(room_state(room.port))
        with trio.fail_after(STEP):
            report = await control.status(None)
        assert report is not None
        assert report.status.members == ("ann",)
        assert report.status.room == "multichat"
        assert await control.status(room.port + 1 if room.port < 65535 else 1) is None
        await ann.aclose()


async def test_a_wrong_token_is_refused_and_the_room_stays_up() -> None:
    async with start_room(control_token=CONTROL_TOKEN) as room:
        with trio.fail_after(STEP), pytest.raises(ControlError, match="refused"):
            await control.send_control(room_state(room.port, token="wrong"), "shutdown")
        stranger = await Peer.open(room.port)
        await stranger.send(Control("guess", "shutdown", "pwned"))
        refused = await stranger.next_event()
        assert isinstance(refused, Error) and refused.code == "bad_token"
        await stranger.aclose()
        assert room.server.shutdown_reason is None


async def test_status_is_none_when_the_recorded_room_does_not_answer() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        write_state(room_state(port))
        with trio.fail_after(STEP):
            assert await control.status(None) is None


async def test_several_rooms_need_a_port(states: Path) -> None:
    write_state(room_state(5002))
    write_state(room_state(5003))
    with pytest.raises(ControlError, match="--port"):
        control.pick_room(None)
    assert control.pick_room(5003) == room_state(5003)


async def test_down_asks_the_room_to_close_and_waits_for_its_process(
    sleepers: StartSleeper, states: Path
) -> None:
    async with start_room(control_token=CONTROL_TOKEN) as room:
        process = await sleepers()
        write_state(room_state(room.port, pid=process.pid))
        ann = await room.join("ann")

        async def exit_when_closed() -> None:
            await room.server.stopped.wait()
            process.process.kill()  # the room's process exits after its shutdown

        room.nursery.start_soon(exit_when_closed)
        with trio.fail_after(STEP):
            said = await control.down(None, "see you", force=False)
            assert said.startswith(f"The room on port {room.port} is closed")
            assert await ann.expect(Shutdown) == Shutdown("see you")
        await ann.aclose()


async def test_down_sends_sigterm_to_a_room_that_does_not_answer(
    sleepers: StartSleeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "DOWN_WAIT_SECONDS", 0.2)
    process = await sleepers()
    write_state(room_state(dead_port(), pid=process.pid))
    with trio.fail_after(STEP):
        said = await control.down(None, "bye", force=False)
    assert said.endswith("is closed (after SIGTERM).")
    assert process.process.returncode == -signal.SIGTERM


async def test_down_says_to_use_force_when_the_process_will_not_exit(
    sleepers: StartSleeper, monkeypatch: pytest.MonkeyPatch, states: Path
) -> None:
    monkeypatch.setattr(control, "DOWN_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(control, "TERM_WAIT_SECONDS", 0.2)
    stubborn = await sleepers(
        sys.executable,
        "-c",
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
        stdout=subprocess.PIPE,
    )
    assert stubborn.process.stdout is not None
    with trio.fail_after(STEP):  # a SIGTERM before its handler is in would end it
        assert (await stubborn.process.stdout.receive_some()).startswith(b"r")
    write_state(room_state(dead_port(), pid=stubborn.pid))
    with trio.fail_after(STEP), pytest.raises(ControlError, match="--force"):
        await control.down(None, "bye", force=False)
    assert stubborn.process.returncode is None

    with trio.fail_after(STEP):
        said = await control.down(None, "bye", force=True)
    assert said.startswith("Killed the room") and "were not told" in said
    await stubborn.exited.wait()
    assert stubborn.process.returncode == -signal.SIGKILL
    assert os.listdir(states) == []


async def test_down_with_nothing_up_says_so() -> None:
    with pytest.raises(ControlError, match="no room is up here"):
        await control.down(None, "bye", force=False)


# --------------------------------------------------------------------------- the commands


async def test_status_command_exits_3_when_no_room_is_up(states: Path) -> None:
    result = await multichat("status")
    assert (result.returncode, result.stdout) == (3, b"No room is up here.\n")
    stale = write_state(room_state(5002, pid=dead_pid()))
    result = await multichat("status")
    assert (result.returncode, result.stdout) == (3, b"No room is up here.\n")
    assert not stale.exists(), "the stale state file is cleaned"


async def test_status_command_reports_members_and_uptime() -> None:
    async with start_room(control_token=CONTROL_TOKEN) as room:
        ann = await room.join("ann")
        bob = await room.join("bob")
        write_state(room_state(room.port))
        result = await multichat("status")
        assert result.returncode == 0, result
        out = result.stdout.decode()
        assert "Room 'multichat' is up" in out
        assert "Members online (2): ann, bob" in out
        assert "Uptime: 0h 00m 0" in out
        assert f"Public: {LINK}" in out
        assert "TCP:    tcp://0.tcp.ngrok.io:12345" in out
        # --port picks one room; a port with no room is "not up".
        assert (await multichat("status", "--port", str(room.port))).returncode == 0
        assert (await multichat("status", "--port", "1")).returncode == 3
        await ann.aclose()
        await bob.aclose()


async def test_down_command_with_nothing_up_fails_in_one_line() -> None:
    result = await multichat("down", "--reason", "bye")
    assert result.returncode == 1
    assert result.stderr == b"multichat: no room is up here (nothing to stop)\n"
    assert result.stdout == b""


def test_generated_control_tokens_differ() -> None:
    from multichat.server.auth import new_token

    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 22 for t in tokens)


# --------------------------------------------------------------------------- other containers

OTHER_PIDNS = "pid:[1]"  # no process on this machine runs in it


def test_a_room_in_another_pid_namespace_is_not_called_stale(states: Path) -> None:
    # Compose's tunnel shares the state directory, not the server's PIDs: a pid it cannot see
    # proves nothing, so the file stays and the room's own port decides.
    path = write_state(room_state(5002, pid=dead_pid(), pidns=OTHER_PIDNS))
    assert [r.port for r in running_rooms()] == [5002]
    assert path.exists()


async def test_down_from_another_container_asks_and_waits_for_the_state_file(
    states: Path,
) -> None:
    async with start_room(control_token=CONTROL_TOKEN) as room:
        path = write_state(room_state(room.port, pid=dead_pid(), pidns=OTHER_PIDNS))
        ann = await room.join("ann")

        async def remove_when_closed() -> None:
            await room.server.stopped.wait()
            path.unlink()  # what the room's own process does last

        room.nursery.start_soon(remove_when_closed)
        with trio.fail_after(STEP):
            said = await control.down(None, "the host stopped the room", force=False)
            assert said.startswith(f"The room on port {room.port} is closed")
            assert await ann.expect(Shutdown) == Shutdown("the host stopped the room")
        await ann.aclose()


async def test_down_force_cannot_kill_a_room_in_another_container(states: Path) -> None:
    write_state(room_state(dead_port(), pid=dead_pid(), pidns=OTHER_PIDNS))
    with pytest.raises(ControlError, match="another container"):
        await control.down(None, "bye", force=True)


def test_a_zombie_is_not_alive() -> None:
    # A room that exited but whose parent has not reaped it yet is gone for `down`'s purposes.
    child = subprocess.Popen(["sleep", "0"])
    for _ in range(500):  # at most 5 s for `sleep 0` to exit (unreaped: we do not wait yet)
        if not pid_alive(child.pid):
            break
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    assert child.poll() == 0  # reaped only now


# --------------------------------------------------------------------------- moderation
# The real `multichat kick/ban/...` against a real `multichat serve` process, and its console.

SERVE_PASSWORD = "moderation test password"
# Another loopback address, so that banning one member's address does not ban the test's own.
OTHER_ADDRESS = "127.0.0.2"


class Output:
    """A process's output, read up to a line that matches."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""

    async def line(self, pattern: str) -> str:
        while (found := re.search(pattern, self.text, re.MULTILINE)) is None:
            data = await self.stream.receive_some(65536)
            assert data, f"output ended before {pattern!r}: {self.text!r}"
            self.text += data.decode()
        self.text = self.text[found.end() :]
        return found.group(0)


class Served:
    """A `multichat serve` process: its port, its console (stdin) and what it prints."""

    def __init__(self, process: trio.Process, port: int, out: Output) -> None:
        self.process = process
        self.port = port
        self.out = out

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def join(self, name: str, source: str = "127.0.0.1") -> Peer:
        peer = Peer(await trio.open_tcp_stream("127.0.0.1", self.port, local_address=source))
        await peer.send(Hello(name, SERVE_PASSWORD))
        welcome = await peer.next_event()
        assert isinstance(welcome, Welcome), welcome
        return peer


@pytest.fixture
async def served(states: Path) -> AsyncIterator[Served]:
    process = await trio.lowlevel.open_process(
        [str(MULTICHAT), "serve", "--host", "127.0.0.1", "--port", "0", "--room", "den"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MULTICHAT_PASSWORD": SERVE_PASSWORD},
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(STEP):
                log = Output(process.stderr)
                started = await log.line(r"serving room 'den' on port \d+")
                port = int(started.rsplit(" ", 1)[1])
                while not any(room.port == port for room in running_rooms()):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # the state file is written just after
            nursery.start_soon(_drain, process.stderr)  # the log must not fill its pipe
            yield Served(process, port, Output(process.stdout))
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()  # this pid only
        await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.rstrip("\n")


async def kicked(peer: Peer, code: str) -> Error:
    """What a member put out of the room sees: an error saying why, then the close."""
    with trio.fail_after(STEP):
        error = await peer.expect(Error)
        assert isinstance(error, Error) and error.code == code
        assert isinstance(await peer.next_event(), ConnectionClosed)
    await peer.aclose()
    return error


async def test_kick_ban_bans_and_unban_from_another_terminal(served: Served) -> None:
    ann = await served.join("ann")
    bob = await served.join("bob", OTHER_ADDRESS)

    result = await multichat("kick", "bob", "too", "loud")
    assert (result.returncode, result.stdout) == (0, b"host kicked bob (too loud)\n"), result
    error = await kicked(bob, "kicked")
    assert error.message == "you were kicked by host: too loud"
    with trio.fail_after(STEP):
        left = await ann.expect(Leave)
    assert isinstance(left, Leave) and (left.name, left.reason) == ("bob", "kicked: too loud")

    bob = await served.join("bob", OTHER_ADDRESS)  # a kick is not a ban
    result = await multichat("ban", "bob", "--for", "1h", "spam")
    assert result.stdout == b"host banned bob (127.0.0.2) for 1h (spam)\n", result
    await kicked(bob, "banned")
    with trio.fail_after(STEP):
        left = await ann.expect(Leave)
    assert isinstance(left, Leave) and left.reason == "banned: spam"

    # The ban is checked before the password: a banned address cannot even guess.
    stranger = Peer(
        await trio.open_tcp_stream("127.0.0.1", served.port, local_address=OTHER_ADDRESS)
    )
    await stranger.send(Hello("bob", "a wrong guess"))
    with trio.fail_after(STEP):
        refused = await stranger.next_event()
    assert isinstance(refused, Error) and refused.code == "banned", refused
    assert refused.message.startswith("you are banned from this room until ")
    await stranger.aclose()

    listed = (await multichat("bans")).stdout.decode()
    assert re.fullmatch(r"bob \(127\.0\.0\.2\) until [\d-]+ [\d:]+ by host - spam\n", listed)
    result = await multichat("unban", "bob")
    assert (result.returncode, result.stdout) == (0, b"host lifted the ban on bob\n")
    assert (await multichat("bans")).stdout == b"No bans.\n"
    bob = await served.join("bob", OTHER_ADDRESS)
    await bob.aclose()
    await ann.aclose()


async def test_mute_lock_and_operators_from_another_terminal(served: Served) -> None:
    ann = await served.join("ann")
    bob = await served.join("bob")
    result = await multichat("mute", "bob", "--for", "10m")
    assert (result.returncode, result.stdout) == (0, b"host muted bob for 10m\n"), result
    with trio.fail_after(STEP):
        notice = await ann.expect(Notice)
        assert isinstance(notice, Notice) and notice.text == "host muted bob for 10m"
        await bob.say("can I speak?")
        refused = await bob.expect(Error)
    assert isinstance(refused, Error) and refused.code == "muted"
    assert (await multichat("unmute", "bob")).stdout == b"host unmuted bob\n"

    assert (await multichat("lock")).stdout == b"host locked the room: nobody new can join\n"
    late = Peer(await trio.open_tcp_stream("127.0.0.1", served.port))
    await late.send(Hello("carol", SERVE_PASSWORD))
    with trio.fail_after(STEP):
        locked = await late.next_event()
    assert isinstance(locked, Error) and locked.code == "locked"
    await late.aclose()
    assert (await multichat("unlock")).stdout == b"host unlocked the room\n"
    # (From another address, so that what this meets is the unlock, not a per-source limit.)
    carol = await served.join("carol", "127.0.0.3")

    assert (await multichat("op", "ann")).stdout == b"host made ann an operator\n"
    await ann.send(Who())
    with trio.fail_after(STEP):
        members = await ann.expect(Members)
    assert isinstance(members, Members) and members.ops == ("ann",)
    assert (await multichat("deop", "ann")).stdout == b"host took operator rights from ann\n"
    for peer in (ann, bob, carol):
        await peer.aclose()


async def test_moderation_mistakes_are_one_line(served: Served) -> None:
    result = await multichat("kick", "zed")
    assert result.returncode == 1 and result.stdout == b""
    assert one_line(result) == "multichat: nobody called 'zed' is in the room"
    result = await multichat("unban", "203.0.113.9")
    assert result.returncode == 1
    assert one_line(result) == "multichat: no ban for '203.0.113.9'; /bans lists them"


async def test_a_bad_duration_is_refused_before_connecting(states: Path) -> None:
    # No room is up: the exit code says it never got as far as looking for one.
    for command in (["ban", "bob", "--for", "10x"], ["mute", "bob", "--for=forever"]):
        result = await multichat(*command)
        assert result.returncode == 2 and result.stdout == b"", result
        assert "is not a duration; try 30s, 10m, 2h or 1d" in one_line(result)
    result = await multichat("lock")
    assert (result.returncode, one_line(result)) == (1, "multichat: no room is up here")


async def test_the_console_moderates_as_the_host(served: Served) -> None:
    ann = await served.join("ann")
    bob = await served.join("bob")
    with trio.fail_after(STEP):
        await served.type("kick bob rude")
        assert await served.out.line(r"^.*\n") == "host kicked bob (rude)\n"
    error = await kicked(bob, "kicked")
    assert error.message == "you were kicked by host: rude"
    with trio.fail_after(STEP):
        left = await ann.expect(Leave)
        assert isinstance(left, Leave) and left.reason == "kicked: rude"
        await served.type("topic movie night at 8")
        assert await served.out.line(r"^.*\n") == "Topic: movie night at 8\n"
        assert await ann.expect(Topic) == Topic("movie night at 8", "host")
        await served.type("who")
        assert await served.out.line(r"^.*\n") == "Online (1): ann\n"
        await served.type("/mute ann --for 5x")
        assert await served.out.line(r"^.*\n") == (
            "! '5x' is not a duration; try 30s, 10m, 2h or 1d\n"
        )
        await served.type("dance")
        assert (
            await served.out.line(r"^.*\n") == "! unknown command 'dance'; type help for the list\n"
        )
        await served.type("help")
        await served.out.line(
            r"^ban NAME\|ADDRESS \[--for DURATION\] \[REASON\] +remove and keep out"
        )
        await served.type("shutdown see you")
        assert await ann.expect(Shutdown) == Shutdown("see you")
        assert await served.process.wait() == 0
    await ann.aclose()


# --------------------------------------------------------------------------- rooms


def test_format_status_lists_every_room_with_its_members_and_topic() -> None:
    rooms = (RoomInfo("den", 1, "", ("ann",)), RoomInfo("games", 2, "chess", ("bob", "cy")))
    status = Status("den", ("ann", "bob", "cy"), 5.0, "0.1.0", rooms)
    lines = format_status(StatusReport(room_state(5002), status)).splitlines()
    assert lines[2:6] == [
        "Members online (3): ann, bob, cy",
        "Rooms (2):",
        "  den (1 online): ann",
        "  games (2 online): bob, cy; topic: chess",
    ]
    alone = Status("den", ("ann",), 5.0, "0.1.0", (RoomInfo("den", 1, "plans", ("ann",)),))
    assert "Topic: plans" in format_status(StatusReport(room_state(5002), alone)).splitlines()


async def test_the_console_opens_and_lists_rooms_and_status_shows_them(served: Served) -> None:
    ann = await served.join("ann")
    with trio.fail_after(STEP):
        await served.type("room add attic")
        said = await served.out.line(r"^.*\n")
        assert said == "Room 'attic' is open: friends join it with /join attic\n"
        await served.type("room add ATTIC")
        assert await served.out.line(r"^.*\n") == "! there is a room called 'ATTIC' already\n"
        await served.type("room add \x1b[2J")
        assert (await served.out.line(r"^.*\n")).startswith("! room name contains")
        bob = Peer(await trio.open_tcp_stream("127.0.0.1", served.port))
        await bob.send(Hello("bob", SERVE_PASSWORD, room="attic"))
        welcome = await bob.next_event()
        assert isinstance(welcome, Welcome) and welcome.room == "attic"
        await served.type("rooms")
        assert await served.out.line(r"^.*\n") == "den (first): 1 online (ann)\n"
        assert await served.out.line(r"^.*\n") == "attic: 1 online (bob)\n"
        await served.type("who")
        assert await served.out.line(r"^.*\n") == "den: Online (1): ann\n"
        assert await served.out.line(r"^.*\n") == "attic: Online (1): bob\n"
        await served.type("topic --room attic dusty")
        assert await served.out.line(r"^.*\n") == "Topic: dusty\n"
        assert await bob.expect(Topic) == Topic("dusty", "host")
    status = await multichat("status")
    assert status.returncode == 0, status
    out = status.stdout.decode()
    assert "Room 'den' is up" in out and "Members online (2): ann, bob" in out
    assert "  den (1 online): ann\n  attic (1 online): bob; topic: dusty\n" in out
    result = await multichat("lock", "--room", "attic")
    assert result.stdout == b"host locked the room: nobody new can join\n", result
    late = Peer(await trio.open_tcp_stream("127.0.0.1", served.port))
    await late.send(Hello("cy", SERVE_PASSWORD, room="attic"))
    with trio.fail_after(STEP):
        locked = await late.next_event()
    assert isinstance(locked, Error) and locked.code == "locked"
    result = await multichat("kick", "bob", "out")  # found in attic by name
    assert result.stdout == b"host kicked bob (out)\n", result
    result = await multichat("unlock", "--room", "nowhere")
    assert (result.returncode, one_line(result)) == (
        1,
        "multichat: there is no room called 'nowhere' here",
    )
    for peer in (ann, bob, late):
        await peer.aclose()
