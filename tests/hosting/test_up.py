"""`multichat up`, `down`, `status` and `tunnel`, end to end: the real CLI in subprocesses.

The ngrok agent is the stand-in (tests/ngrok_standin), which the real pyngrok inside `up`
drives; every public address it hands out is a 127.0.0.1 port (the HTTPS link names it
`localhost`, with a certificate from a test CA that the test's clients trust). The LAN address
a test joins through is one of this machine's own interfaces, which the kernel keeps on this
machine. Nothing here sends a packet anywhere else.
"""

from __future__ import annotations

import codecs
import http.client
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.events import Message as WebSocketMessage

import ngrok_standin
from chatpeer import Peer
from multichat.client.address import parse_address
from multichat.client.login import login
from multichat.hosting import launcher, tunnel_supervision
from multichat.hosting import tunnel as tunnel_module
from multichat.hosting.lan import lan_addresses
from multichat.hosting.tunnel import TunnelSettings
from multichat.protocol.events import (
    ConnectionClosed,
    Control,
    Error,
    Hello,
    Leave,
    Message,
    Shutdown,
    Welcome,
)
from multichat.server.listeners import ChatServer
from ngrok_standin import (
    BROWSER_USER_AGENT,
    FAIL_ENV,
    INTERSTITIAL_COOKIE,
    SKIP_WARNING_HEADER,
    pid_alive,
)
from redisserver import RedisServer

MULTICHAT = Path(sys.executable).parent / "multichat"
TOKEN = "2qUpTestAuthtoken_7hJk3WxQ9pLmR4tZ"  # looks like a real one; must never be printed
PASSWORD = "open sesame"
STEP = 20  # seconds for any one step: each takes about one, on a busy two-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    returncode: int
    out: str
    err: str


class Running:
    """A command running in the background; its output is collected as it comes."""

    def __init__(self, process: trio.Process, args: tuple[str, ...]) -> None:
        self.process = process
        self.args = args
        self.out = ""
        self.err = ""
        self.returncode: int | None = None
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _pump(self, stream: trio.abc.ReceiveStream, which: str) -> None:
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        async for chunk in stream:
            setattr(self, which, getattr(self, which) + decode(chunk))
            self._notify()

    async def _reap(self) -> None:
        # Reaping at once matters: `down` waits for the pid to go, and a zombie has a pid.
        self.returncode = await self.process.wait()
        self._notify()

    async def wait_for(
        self, pattern: str, *, after: int = 0, err: bool = False, seconds: float = STEP
    ) -> re.Match[str]:
        """The first match of `pattern` in stdout (or stderr) from offset `after`, once it is."""
        with trio.fail_after(seconds):
            while True:
                found = re.compile(pattern).search(self.err if err else self.out, after)
                if found is not None:
                    return found
                if self.returncode is not None:
                    raise AssertionError(f"{self} exited without printing {pattern!r}")
                await self._changed.wait()

    async def wait(self) -> int:
        with trio.fail_after(STEP):
            while self.returncode is None:
                await self._changed.wait()
        return self.returncode

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    def signal(self, signum: int) -> None:
        assert self.returncode is None, f"{self} has already exited"
        os.kill(self.process.pid, signum)

    def __str__(self) -> str:
        return (
            f"`multichat {' '.join(self.args)}` (exit {self.returncode})\n"
            f"--- stdout\n{self.out}--- stderr\n{self.err}"
        )


class Cli:
    """The `multichat` command with a home, state directory and ngrok all inside `tmp`."""

    def __init__(self, tmp: Path, nursery: trio.Nursery) -> None:
        self.tmp = tmp
        self.nursery = nursery
        self.state_dir = tmp / "state"
        self.agent_state = tmp / "agent.state"
        self.agent_pidfile = tmp / "agent.pid"
        self.ngrok_config = ngrok_standin.write_config(tmp)
        self.tls = ngrok_standin.make_tls(tmp)
        (tmp / "home").mkdir()
        drop = ("NGROK_", "PYNGROK_", "STANDIN_NGROK_", "MULTICHAT_")
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.upper().startswith(drop) and "PROXY" not in key.upper()
        }
        self.env.update(
            HOME=str(tmp / "home"),
            XDG_CONFIG_HOME=str(tmp / "home" / ".config"),
            MULTICHAT_STATE_DIR=str(self.state_dir),
            NGROK_AUTHTOKEN=TOKEN,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            STANDIN_NGROK_STATE=str(self.agent_state),
            STANDIN_NGROK_PIDFILE=str(self.agent_pidfile),
            STANDIN_NGROK_LIFETIME="60",
            **self.tls.env(),
        )
        self.running: list[Running] = []
        self.results: list[Result] = []

    def ngrok(self) -> tuple[str, ...]:
        """The options that point `up` and `tunnel` at the stand-in agent."""
        return (
            "--ngrok-path",
            ngrok_standin.ngrok_path(),
            "--ngrok-config",
            str(self.ngrok_config),
        )

    async def run(self, *args: str, **env: str) -> Result:
        with trio.fail_after(STEP):
            done = await trio.run_process(
                [str(MULTICHAT), *args],
                env={**self.env, **env},
                capture_stdout=True,
                capture_stderr=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        result = Result(done.returncode, done.stdout.decode(), done.stderr.decode())
        self.results.append(result)
        return result

    async def start(self, *args: str, new_session: bool = False, **env: str) -> Running:
        process = await trio.lowlevel.open_process(
            [str(MULTICHAT), *args],
            env={**self.env, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=new_session,
        )
        running = Running(process, args)
        self.running.append(running)
        assert process.stdout is not None and process.stderr is not None
        self.nursery.start_soon(running._pump, process.stdout, "out")
        self.nursery.start_soon(running._pump, process.stderr, "err")
        self.nursery.start_soon(running._reap)
        return running

    async def up(self, *args: str, **env: str) -> tuple[Running, Banner]:
        """`multichat up` on a free port, once its banner is out."""
        up = await self.start("up", "--port", str(free_port()), *args, new_session=False, **env)
        await up.wait_for(r"Close the room:.*\n-+\n")
        return up, Banner.read(up.out)

    def agent_pids(self) -> list[int]:
        return ngrok_standin.started_pids(self.agent_state)

    def state_files(self) -> list[Path]:
        return sorted(self.state_dir.glob("*")) if self.state_dir.exists() else []

    def everything_printed(self) -> str:
        texts = [r.out + r.err for r in self.results] + [r.out + r.err for r in self.running]
        return "\n".join(texts)

    def cleanup(self) -> None:
        for running in self.running:
            if running.returncode is None:
                running.process.kill()  # SIGKILL to this pid only
        ngrok_standin.kill_agents(self.agent_state)


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[Cli]:
    commands: Cli | None = None
    try:
        async with trio.open_nursery() as nursery:
            commands = Cli(tmp_path, nursery)
            yield commands
            nursery.cancel_scope.cancel()
    finally:
        if commands is not None:
            commands.cleanup()
    assert TOKEN not in commands.everything_printed(), "the authtoken was printed"


@dataclass
class Banner:
    """What `up`'s banner says, read the way a person would."""

    text: str
    lan: list[str]
    port: int
    https: str | None
    tcp: str | None
    password: str | None
    problems: list[str]

    @classmethod
    def read(cls, out: str) -> Banner:
        text = out[out.index("multichat room") :]
        lan = re.findall(r"^  LAN: +(\S+):\d+$", text, re.MULTILINE)
        port = re.search(r"^  LAN: +\S+:(\d+)$", text, re.MULTILINE)
        https = re.search(r"^  Open in a browser: (https://\S+)$", text, re.MULTILINE)
        tcp = re.search(r"^  TCP: +(tcp://\S+)$", text, re.MULTILINE)
        password = re.search(r"^  Password: (\S+)", text, re.MULTILINE)
        assert port is not None, text
        return cls(
            text,
            lan,
            int(port.group(1)),
            https.group(1) if https else None,
            tcp.group(1) if tcp else None,
            password.group(1) if password else None,
            re.findall(r"^  ! (.*)$", text, re.MULTILINE),
        )

    @property
    def problem(self) -> str | None:
        """The one problem the banner warns about, if any."""
        assert len(self.problems) <= 1, self.problems
        return self.problems[0] if self.problems else None

    def tcp_address(self) -> tuple[str, int]:
        assert self.tcp is not None, self.text
        host, _, port = self.tcp.removeprefix("tcp://").rpartition(":")
        assert host == "127.0.0.1", "the stand-in's public addresses are on this machine"
        return host, int(port)

    def lan_address(self) -> tuple[str, int]:
        """A LAN address from the banner that is this machine's own, else 127.0.0.1."""
        own = set(lan_addresses())
        return next((a for a in self.lan if a in own), "127.0.0.1"), self.port


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


async def fetch(url: str, headers: dict[str, str] | None = None) -> Reply:
    """GET `url` with Python's own HTTPS client and default trust (so SSL_CERT_FILE), in a
    thread."""

    def get() -> Reply:
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.hostname is not None
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context, timeout=STEP
        )
        try:
            conn.request("GET", parts.path or "/", headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    return await trio.to_thread.run_sync(get)


def trust_standin(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process trusts the stand-in's certificates the standard way: SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cli.tls.ca_file))


class WebSocketLines:
    """A friend's browser tab, as `Peer` sees it: multichat/1 in WebSocket text messages to
    `/ws` through the HTTPS link, read and written as JSON lines."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self._text = ""
        self._lines = bytearray()
        self._closed = False

    @classmethod
    async def open(cls, link: str) -> WebSocketLines:
        parts = urlsplit(link)
        assert parts.hostname is not None and parts.port is not None
        raw = await trio.open_tcp_stream(parts.hostname, parts.port)
        stream = trio.SSLStream(
            raw, ssl.create_default_context(), server_hostname=parts.hostname, https_compatible=True
        )
        ws = WSConnection(ConnectionType.CLIENT)
        headers = [
            ("User-Agent", BROWSER_USER_AGENT),
            ("Origin", f"https://{parts.netloc}"),
            # The "Visit Site" click happened when the page loaded.
            ("Cookie", f"{INTERSTITIAL_COOKIE}={parts.hostname}"),
        ]
        await stream.send_all(
            ws.send(Request(host=parts.netloc, target="/ws", extra_headers=headers))
        )
        while True:
            data = await stream.receive_some()
            assert data, "closed during the WebSocket handshake"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(stream, ws)
                assert not isinstance(event, RejectConnection), event

    async def send_all(self, data: bytes) -> None:
        for line in data.splitlines():
            await self.stream.send_all(self.ws.send(WebSocketMessage(data=line.decode())))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._lines and not self._closed:
            data = await self.stream.receive_some()
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        self._lines += self._text.encode() + b"\n"
                        self._text = ""
                elif isinstance(event, Ping):
                    await self.stream.send_all(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._closed = True
            if not data:
                self._closed = True
        lines, self._lines = bytes(self._lines), bytearray()
        return lines

    async def aclose(self) -> None:
        await self.stream.aclose()


async def join_in_a_browser(link: str, name: str, password: str = PASSWORD) -> Peer:
    peer = Peer(await WebSocketLines.open(link))  # type: ignore[arg-type]
    await peer.send(Hello(name, password))
    welcome = await peer.next_event()
    assert isinstance(welcome, Welcome), welcome
    peer.welcome = welcome
    return peer


async def join(address: tuple[str, int], name: str, password: str = PASSWORD) -> Peer:
    peer = Peer(await trio.open_tcp_stream(*address))
    await peer.send(Hello(name, password))
    welcome = await peer.next_event()
    assert isinstance(welcome, Welcome), welcome
    peer.welcome = welcome
    return peer


@asynccontextmanager
async def far_and_near(
    banner: Banner, password: str = PASSWORD
) -> AsyncIterator[tuple[Peer, Peer]]:
    """A friend through the tunnel and one on the LAN, both joined; closed afterwards."""
    far = await join(banner.tcp_address(), "far", password)
    near = await join(banner.lan_address(), "near", password)
    try:
        yield far, near
    finally:
        await far.aclose()
        await near.aclose()


async def closed_cleanly(cli: Cli, up: Running, agent: int) -> None:
    """`up` exited 0, and neither its ngrok agent nor its state file is left behind."""
    assert await up.wait() == 0, up
    await wait_gone(agent)
    assert cli.state_files() == []


async def expect_shutdown(peer: Peer, reason: str) -> None:
    notice = await peer.expect(Shutdown)
    assert notice == Shutdown(reason)
    assert isinstance(await peer.next_event(), ConnectionClosed)


async def chat(sender: Peer, receiver: Peer, text: str) -> None:
    """`sender` says `text` and `receiver` sees it, after anything already in the room."""
    await sender.say(text)
    while True:
        message = await receiver.expect(Message)
        assert isinstance(message, Message)
        if message.text == text:
            break
    assert sender.welcome is not None and message.sender == sender.welcome.name


async def wait_gone(*pids: int) -> None:
    """Each process has exited (a zombie counts as gone); polled: they are not our children."""
    with trio.fail_after(STEP):
        while any(pid_alive(pid) for pid in pids):  # noqa: ASYNC110
            await trio.sleep(0.05)


def standin_pid(cli: Cli) -> int:
    pid = ngrok_standin.read_pid(cli.agent_pidfile)
    assert pid is not None, "no ngrok agent was started"
    return pid


# --------------------------------------------------------------------------- the whole story


async def test_up_public_and_lan_friends_chat_then_down(cli: Cli) -> None:
    up, banner = await cli.up(*cli.ngrok())
    assert banner.password is not None, "no password given: one is generated and shown"
    assert re.fullmatch(r"[a-z]{4}(-[a-z]{4}){2}", banner.password)
    assert sorted(banner.lan) == sorted(lan_addresses())
    assert banner.https is not None and banner.https.startswith("https://localhost:")
    assert banner.tcp is not None and banner.problems == []
    # The link for browsers leads; then the commands, HTTPS first.
    assert banner.text.index("Open in a browser") < banner.text.index("multichat connect")
    joins = re.findall(r"^    multichat connect (\S+)", banner.text, re.MULTILINE)
    assert joins[:2] == [banner.https, banner.tcp]
    assert "Opening the public ngrok tunnel" in up.out[: up.out.index(banner.text)]
    agent = standin_pid(cli)
    assert len(cli.agent_pids()) == 1, "one agent serves both endpoints"
    [state_file] = cli.state_files()
    assert state_file.stat().st_mode & 0o777 == 0o600
    assert banner.password not in state_file.read_text()

    async with far_and_near(banner, banner.password) as (far, near):
        await chat(far, near, "hello from the internet")
        await chat(near, far, "hello from the sofa")

        status = await cli.run("status")
        assert status.returncode == 0, status
        assert "Members online (2): far, near" in status.out
        assert f"Public: {banner.https}\nTCP:    {banner.tcp}\n" in status.out

        down = await cli.run("down", "--reason", "bye")
        assert down.returncode == 0, down
        assert "closed" in down.out
        await expect_shutdown(far, "bye")
        await expect_shutdown(near, "bye")
    await closed_cleanly(cli, up, agent)
    assert "lvl=" not in up.out + up.err, "ngrok's own log lines are only for --verbose"


async def test_a_browser_opens_the_link_and_joins_over_https(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_standin(cli, monkeypatch)
    up, banner = await cli.up("--password", PASSWORD, *cli.ngrok())
    assert banner.https is not None
    agent = standin_pid(cli)

    # First visit: ngrok's free-plan warning, not the room.
    browser = {"User-Agent": BROWSER_USER_AGENT}
    warning = await fetch(banner.https, browser)
    assert warning.headers["Ngrok-Error-Code"] == "ERR_NGROK_6024"
    assert "Visit Site" in warning.body.decode()
    # After "Visit Site" (the cookie), the room's own page.
    hostname = urlsplit(banner.https).hostname
    page = await fetch(banner.https, {**browser, "Cookie": f"{INTERSTITIAL_COOKIE}={hostname}"})
    assert page.status == 200, page
    assert page.headers["Ngrok-Error-Code"] is None, "the room answered, not ngrok"
    assert page.headers["Content-Type"].startswith("text/html")
    assert b"<html" in page.body.lower()
    # A program skips the warning with ngrok's header.
    program = await fetch(banner.https, {SKIP_WARNING_HEADER: "1"})
    assert (program.status, program.body) == (200, page.body)

    # The page's WebSocket, through the same link, is a member like any other.
    tab = await join_in_a_browser(banner.https, "tab")
    near = await join(banner.lan_address(), "near")
    try:
        await chat(tab, near, "hello from a browser tab")
        await chat(near, tab, "hello from the sofa")
        status = await cli.run("status")
        assert "Members online (2): tab, near" in status.out, status
        await up.type("shutdown browsers too")
        await expect_shutdown(tab, "browsers too")
        await expect_shutdown(near, "browsers too")
    finally:
        await tab.aclose()
        await near.aclose()
    await closed_cleanly(cli, up, agent)


async def test_with_several_rooms_the_banner_links_straight_into_each(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_standin(cli, monkeypatch)
    rooms = ("--room", "den", "--room", "board games")
    up, banner = await cli.up("--password", PASSWORD, *rooms, *cli.ngrok())
    assert banner.https is not None
    agent = standin_pid(cli)
    assert "  More rooms: 'board games' (friends land in 'den'; /join NAME moves)" in banner.text
    link = f"{banner.https}/#room=board%20games"
    assert f"\n    board games: {link}\n" in banner.text
    address = parse_address(link)
    with trio.fail_after(STEP):
        stream, _, welcome = await login(address, "gus", PASSWORD, room=address.room)
        await trio.aclose_forcefully(stream)
    assert welcome.room == "board games"
    await up.type("shutdown")
    await closed_cleanly(cli, up, agent)


async def test_on_ngroks_free_plan_tcp_needs_a_card_and_the_room_is_public_over_https(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_standin(cli, monkeypatch)
    up, banner = await cli.up(
        "--password", PASSWORD, *cli.ngrok(), STANDIN_NGROK_FAIL="card_required"
    )
    assert banner.https is not None and banner.tcp is None
    assert f"multichat connect {banner.https}" in banner.text
    assert "tcp://" not in banner.text and "Public tunnel failed" not in up.out
    # One line says it, and says the room is public anyway.
    [problem] = banner.problems
    assert problem.startswith("No TCP address: ")
    for words in ("card on file", "HTTPS anyway", "dashboard.ngrok.com/settings", "ERR_NGROK_8013"):
        assert words in problem, problem
    assert up.out.count("ERR_NGROK_8013") == 1, "said once"
    agent = standin_pid(cli)

    page = await fetch(banner.https, {SKIP_WARNING_HEADER: "1"})
    assert page.status == 200 and page.headers["Ngrok-Error-Code"] is None
    tab = await join_in_a_browser(banner.https, "tab")
    try:
        status = await cli.run("status")
        assert status.returncode == 0, status
        assert f"Public: {banner.https}\n" in status.out and "TCP:" not in status.out
        assert "Members online (1): tab" in status.out
        down = await cli.run("down", "--reason", "free plan test over")
        assert down.returncode == 0, down
        await expect_shutdown(tab, "free plan test over")
    finally:
        await tab.aclose()
    await closed_cleanly(cli, up, agent)


async def test_the_authtoken_can_come_from_the_users_ngrok_config(cli: Cli) -> None:
    # Where `ngrok config add-authtoken` puts it; no --ngrok-config, no NGROK_AUTHTOKEN.
    ngrok_dir = cli.tmp / "home" / ".config" / "ngrok"
    ngrok_dir.mkdir(parents=True)
    ngrok_standin.write_config(ngrok_dir, authtoken=TOKEN)
    args = ("--ngrok-path", ngrok_standin.ngrok_path(), "--password", PASSWORD)
    up, banner = await cli.up(*args, NGROK_AUTHTOKEN="")
    assert banner.problem is None, banner.text
    friend = await join(banner.tcp_address(), "friend")
    await friend.aclose()
    up.signal(signal.SIGTERM)
    assert await up.wait() == 0, up
    await wait_gone(*cli.agent_pids())


async def test_no_tcp_asks_ngrok_for_the_https_link_only(cli: Cli) -> None:
    up, banner = await cli.up("--password", PASSWORD, "--no-tcp", *cli.ngrok())
    assert banner.https is not None and banner.tcp is None and banner.problems == []
    log = cli.agent_state.read_text()
    assert "name=multichat-https" in log and "multichat-tcp" not in log
    up.signal(signal.SIGTERM)
    assert await up.wait() == 0, up
    await wait_gone(*cli.agent_pids())


# --------------------------------------------------------------------------- tunnel failures


@pytest.mark.parametrize(
    ("switch", "expected"),
    [
        (None, ["ERR_NGROK_4018", "NGROK_AUTHTOKEN", "add-authtoken"]),  # no token anywhere
        ("bad_authtoken", ["ERR_NGROK_105", "rejected the authtoken", "NGROK_AUTHTOKEN"]),
        ("agent_already_running", ["ERR_NGROK_108", "stop the other one", "trying again"]),
        ("endpoint_in_use", ["ERR_NGROK_334", "already online"]),
        ("missing_binary", ["no ngrok agent at", "--ngrok-path"]),
    ],
)
async def test_a_tunnel_that_cannot_open_leaves_the_room_up_on_the_lan(
    cli: Cli, switch: str | None, expected: list[str]
) -> None:
    env: dict[str, str] = {}
    ngrok = cli.ngrok()
    if switch is None:
        env["NGROK_AUTHTOKEN"] = ""  # and the config has none: ngrok's own "no authtoken"
    elif switch == "missing_binary":
        ngrok = ("--ngrok-path", str(cli.tmp / "nowhere" / "ngrok"))
    else:
        env[FAIL_ENV] = switch
    # --verbose: ngrok echoes a rejected authtoken in its log, which must not reach the screen.
    up, banner = await cli.up("--password", PASSWORD, "--verbose", *ngrok, **env)

    assert (banner.https, banner.tcp) == (None, None)
    assert "Public:   not available" in banner.text
    assert banner.problem is not None and banner.problem.startswith("Public tunnel failed: ")
    for words in expected:
        assert words in banner.problem, banner.problem
    assert banner.password is None, "a password the host chose is not printed"
    friend = await join(banner.lan_address(), "friend")
    try:
        status = await cli.run("status")
        assert status.returncode == 0 and "Public: (no tunnel)" in status.out, status
        down = await cli.run("down", "--reason", "tunnel test over")
        assert down.returncode == 0, down
        await expect_shutdown(friend, "tunnel test over")
    finally:
        await friend.aclose()
    assert await up.wait() == 0, up
    await wait_gone(*cli.agent_pids())
    if switch == "missing_binary":
        assert cli.agent_pids() == []


async def test_ngrok_that_cannot_be_downloaded_says_how_to_point_at_one(cli: Cli) -> None:
    # No --ngrok-path and an empty home: pyngrok's real installer runs. Every request goes to a
    # "proxy" on this machine that records what it was asked and hangs up; no DNS lookup either,
    # since a proxied request names its host to the proxy only.
    asked: list[bytes] = []

    async def proxy(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n" not in data and (chunk := await stream.receive_some()):
                    data += chunk
            asked.append(data)

    listeners = await cli.nursery.start(partial(trio.serve_tcp, proxy, 0, host="127.0.0.1"))
    dead = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    proxies = {name: dead for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
    up, banner = await cli.up("--password", PASSWORD, **proxies)

    assert banner.problem is not None
    assert "could not download the ngrok agent" in banner.problem
    assert "--ngrok-path" in banner.problem
    assert asked and all(line.startswith(b"CONNECT ") for line in asked), asked
    assert not (cli.tmp / "home" / ".config" / "ngrok" / "ngrok").exists()
    # pyngrok's progress line is ended, not run into the banner (in a log file, say).
    shown = [line for line in up.out.split("\n") if "Downloading ngrok" in line]
    assert shown and all(line.rstrip("\r").endswith("...") for line in shown), shown
    friend = await join(banner.lan_address(), "friend")
    await friend.aclose()
    up.signal(signal.SIGTERM)
    assert await up.wait() == 0, up
    assert cli.agent_pids() == []


async def test_a_silent_agent_is_abandoned_at_the_deadline_and_the_room_stays_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, to shorten the 30 s deadline; the subprocess version is marked slow below.
    monkeypatch.setattr(tunnel_module, "OPEN_DEADLINE", 1.0)
    monkeypatch.setattr(tunnel_supervision, "OPEN_DEADLINE", 1.0)
    monkeypatch.setattr(launcher, "OPEN_DEADLINE", 1.0)
    monkeypatch.setattr(tunnel_supervision, "MAX_REOPEN_ATTEMPTS", 0)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setenv("MULTICHAT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv(FAIL_ENV, "silent")
    monkeypatch.setenv(ngrok_standin.STATE_ENV, str(tmp_path / "agent.state"))
    monkeypatch.setenv(ngrok_standin.LIFETIME_ENV, "30")
    settings = TunnelSettings(
        authtoken=TOKEN,
        ngrok_path=ngrok_standin.ngrok_path(),
        config_path=str(ngrok_standin.write_config(tmp_path)),
    )
    out = io.StringIO()
    server = ChatServer(PASSWORD, control_token="control")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: launcher.run_up(
                    server,
                    0,
                    "127.0.0.1",
                    token="control",
                    banner=launcher.Banner("r", out=out),
                    settings=settings,
                )
            )
            with trio.fail_after(STEP):
                while "Close the room" not in out.getvalue():  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert server.port is not None
                friend = await join(("127.0.0.1", server.port), "friend")
                await friend.aclose()
            server.shutdown_nowait("done")
    finally:
        ngrok_standin.kill_agents(tmp_path / "agent.state")
    banner = Banner.read(out.getvalue())
    assert banner.problem is not None and "did not answer in time" in banner.problem
    assert "Gave up on the public tunnel" not in out.getvalue()  # the banner said it all
    await wait_gone(*ngrok_standin.started_pids(tmp_path / "agent.state"))


@pytest.mark.slow
async def test_a_silent_agent_is_abandoned_at_the_real_deadline(cli: Cli) -> None:
    port = str(free_port())
    up = await cli.start("up", "--port", port, *cli.ngrok(), STANDIN_NGROK_FAIL="silent")
    await up.wait_for(r"Close the room", seconds=tunnel_module.OPEN_DEADLINE + STEP)
    banner = Banner.read(up.out)
    assert banner.problem is not None and "did not answer in time" in banner.problem
    friend = await join(banner.lan_address(), "friend", banner.password or "")
    await friend.aclose()
    up.signal(signal.SIGTERM)
    assert await up.wait() == 0, up
    await wait_gone(*cli.agent_pids())


# --------------------------------------------------------------------------- closing the room


async def test_typing_shutdown_on_the_console_closes_the_room_with_the_reason(cli: Cli) -> None:
    up, banner = await cli.up("--password", PASSWORD, "--verbose", *cli.ngrok())
    agent = standin_pid(cli)
    assert re.search(r"^ngrok: .*tunnel session started", up.out, re.MULTILINE), up
    far = await join(banner.tcp_address(), "far")
    try:
        await up.type("shutdown dinner is ready")
        await expect_shutdown(far, "dinner is ready")
    finally:
        await far.aclose()
    await closed_cleanly(cli, up, agent)


async def test_ctrl_c_in_a_terminal_still_reaches_friends_through_the_tunnel(cli: Cli) -> None:
    up = await cli.start(
        "up", "--port", str(free_port()), "--password", PASSWORD, *cli.ngrok(), new_session=True
    )
    await up.wait_for(r"Close the room:.*\n-+\n")
    far = await join(Banner.read(up.out).tcp_address(), "far")
    try:
        os.killpg(up.process.pid, signal.SIGINT)  # Ctrl-C signals the whole foreground group
        await expect_shutdown(far, "the host stopped the room")
    finally:
        await far.aclose()
        assert await up.wait() == 0, up


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_closes_the_room_gracefully(cli: Cli, signum: int) -> None:
    up, banner = await cli.up("--password", PASSWORD, *cli.ngrok())
    agent = standin_pid(cli)
    async with far_and_near(banner) as (far, near):
        up.signal(signum)
        await expect_shutdown(far, "the host stopped the room")
        await expect_shutdown(near, "the host stopped the room")
    await closed_cleanly(cli, up, agent)


async def test_a_signal_while_the_tunnel_opens_does_not_wait_for_it(cli: Cli) -> None:
    up = await cli.start(
        "up", "--port", str(free_port()), *cli.ngrok(), STANDIN_NGROK_FAIL="silent"
    )
    await up.wait_for("Opening the public ngrok tunnel")
    with trio.fail_after(STEP):
        while not cli.agent_pids():  # noqa: ASYNC110
            await trio.sleep(0.05)
    up.signal(signal.SIGTERM)
    with trio.fail_after(5):  # the tunnel's own deadline is 30 s
        assert await up.wait() == 0, up
    assert "Close the room" not in up.out
    await wait_gone(*cli.agent_pids())
    assert cli.state_files() == []


# --------------------------------------------------------------------------- the tunnel's life


async def test_a_dead_agent_is_replaced_and_the_new_addresses_printed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_standin(cli, monkeypatch)
    up, banner = await cli.up("--password", PASSWORD, *cli.ngrok(), STANDIN_NGROK_DIE_AFTER="3")
    new = await up.wait_for(
        r"The tunnel is open again, at new addresses:\n"
        r"Open in a browser: (https://\S+)\n"
        r"Friends join with: multichat connect \1\n"
        r"TCP address: (tcp://\S+)\n",
        after=len(up.out),
    )
    https, tcp = new.group(1), new.group(2)
    assert https != banner.https and tcp != banner.tcp
    assert "The public tunnel closed" in up.out
    assert len(cli.agent_pids()) == 2
    page = await fetch(https, {SKIP_WARNING_HEADER: "1"})
    assert page.status == 200 and page.headers["Ngrok-Error-Code"] is None
    host, _, port = tcp.removeprefix("tcp://").rpartition(":")
    friend = await join((host, int(port)), "friend")
    await friend.aclose()
    status = await cli.run("status")
    assert status.returncode == 0, status
    assert f"Public: {https}\nTCP:    {tcp}\n" in status.out, "the state file has the new ones"
    down = await cli.run("down")
    assert down.returncode == 0, down
    assert await up.wait() == 0, up
    await wait_gone(*cli.agent_pids())


async def test_tunnel_command_serves_a_room_running_elsewhere(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As docker compose runs it: the room's loopback listener, PROXY v2 on the TCP endpoint.
    trust_standin(cli, monkeypatch)
    port, proxy_port = free_port(), free_port()
    serve = await cli.start(
        "serve", "--port", str(port), "--proxy-port", str(proxy_port), MULTICHAT_PASSWORD=PASSWORD
    )
    await serve.wait_for("serving room", err=True)
    target = f"127.0.0.1:{proxy_port}"
    tunnel = await cli.start("tunnel", "--target", target, "--proxy-protocol", "2", *cli.ngrok())
    found = await tunnel.wait_for(
        r"Open in a browser: (https://\S+)\n"
        r"Friends join with: multichat connect \1\n"
        r"TCP address: (tcp://127\.0\.0\.1:(\d+))\n"
    )
    assert tunnel.out.count(found.group(1)) == 2, "the link is said once, with the command"
    agent = standin_pid(cli)
    friend = await join(("127.0.0.1", int(found.group(3))), "friend")
    tab = await join_in_a_browser(found.group(1), "tab")
    try:
        await chat(tab, friend, "through the https link")
        await chat(friend, tab, "through the tcp address")
    finally:
        await friend.aclose()
        await tab.aclose()

    tunnel.signal(signal.SIGTERM)
    assert await tunnel.wait() == 0, tunnel
    await wait_gone(agent)
    assert f"exited pid={agent} reason=sigterm" in cli.agent_state.read_text()
    serve.signal(signal.SIGTERM)
    assert await serve.wait() == 0, serve


async def test_tunnel_command_with_a_missing_binary_names_the_option(cli: Cli) -> None:
    result = await cli.run(
        "tunnel", "--target", f"127.0.0.1:{free_port()}", "--ngrok-path", str(cli.tmp / "nope")
    )
    assert result.returncode == 1, result
    problems = [line for line in result.out.splitlines() if "failed" in line]
    assert len(problems) == 1, result.out
    assert "--ngrok-path" in problems[0]
    assert "Traceback" not in result.err


# --------------------------------------------------------------------------- the rest of `up`


async def test_no_tunnel_with_the_password_from_the_environment(cli: Cli) -> None:
    up, banner = await cli.up("--no-tunnel", MULTICHAT_PASSWORD=PASSWORD)
    assert banner.password is None and PASSWORD not in up.out + up.err
    assert "Public:   none (--no-tunnel)" in banner.text
    assert not cli.agent_state.exists(), "no ngrok agent without a tunnel"
    [state_file] = cli.state_files()
    assert PASSWORD not in state_file.read_text()
    friend = await join(banner.lan_address(), "friend")
    try:
        up.signal(signal.SIGTERM)
        await expect_shutdown(friend, "the host stopped the room")
    finally:
        await friend.aclose()
    assert await up.wait() == 0, up


async def test_up_with_a_backplane_shares_its_room_with_another_server(
    cli: Cli, own_redis: RedisServer
) -> None:
    """`up --backplane` (issue 16): its room is the room of every server on that Redis; when
    it stops, the members of the others see its members leave."""
    url = own_redis.url
    up, banner = await cli.up("--no-tunnel", "--backplane", url, MULTICHAT_PASSWORD=PASSWORD)
    port = free_port()
    serve = await cli.start(
        "serve",
        "--port",
        str(port),
        "--backplane",
        url,
        "--data-dir",
        str(cli.tmp / "data-b"),
        MULTICHAT_PASSWORD=PASSWORD,
        MULTICHAT_STATE_DIR=str(cli.tmp / "state-b"),
    )
    await serve.wait_for("serving room", err=True)
    ann = await join(banner.lan_address(), "ann")
    bob = await join(("127.0.0.1", port), "bob")
    try:
        with trio.fail_after(STEP):
            assert bob.welcome is not None and set(bob.welcome.members) == {"ann", "bob"}
            await chat(ann, bob, "through redis")
            await chat(bob, ann, "and back")
            up.signal(signal.SIGTERM)
            await expect_shutdown(ann, "the host stopped the room")
            left = await bob.expect(Leave)
    finally:
        await ann.aclose()
        await bob.aclose()
    assert isinstance(left, Leave) and left.name == "ann"
    assert await up.wait() == 0, up
    serve.signal(signal.SIGTERM)
    assert await serve.wait() == 0, serve


async def test_a_second_room_on_the_same_port_fails_in_one_line(cli: Cli) -> None:
    up, banner = await cli.up("--no-tunnel", "--password", PASSWORD)
    # Another room (its own data directory) on the same port.
    second = await cli.run(
        "up", "--no-tunnel", "--room", "other", "--port", str(banner.port), "--password", "x"
    )
    assert second.returncode == 1, second
    assert second.err.strip().splitlines()[-1].startswith("multichat: cannot listen on port ")
    assert "Traceback" not in second.err and "ExceptionGroup" not in second.err
    assert "multichat down" in second.err
    up.signal(signal.SIGTERM)
    assert await up.wait() == 0, up


async def test_the_control_token_is_the_proof_not_the_source_address(cli: Cli) -> None:
    # Strangers through the tunnel arrive from 127.0.0.1 too: the address proves nothing.
    up, banner = await cli.up("--password", PASSWORD, *cli.ngrok())
    stranger = Peer(await trio.open_tcp_stream(*banner.tcp_address()))
    try:
        await stranger.send(Control("guess", "shutdown", "pwned"))
        refused = await stranger.next_event()
        assert isinstance(refused, Error) and refused.code == "bad_token", refused
    finally:
        await stranger.aclose()
    status = await cli.run("status")
    assert status.returncode == 0, status
    down = await cli.run("down")
    assert down.returncode == 0, down
    assert await up.wait() == 0, up


async def test_down_and_status_when_no_room_is_up(cli: Cli) -> None:
    down = await cli.run("down")
    assert down.returncode == 1, down
    assert down.err == "multichat: no room is up here (nothing to stop)\n"
    status = await cli.run("status")
    assert (status.returncode, status.out) == (3, "No room is up here.\n")


async def test_a_second_room_on_the_same_data_directory_refuses_in_one_line(cli: Cli) -> None:
    up, _ = await cli.up("--no-tunnel", "--password", PASSWORD)
    second = await cli.run("up", "--no-tunnel", "--port", "0", "--password", "x")
    assert second.returncode == 1, second
    last = second.err.strip().splitlines()[-1]
    assert last.startswith("multichat: ") and "in use" in last, second.err
    assert "Traceback" not in second.err
    up.signal(signal.SIGTERM)
    assert await up.wait() == 0, up
