"""The ngrok tunnel: real pyngrok driving the stand-in agent (tests/ngrok_standin), loopback only.

pyngrok is always given the stand-in's path, or a path where a download can only fail on a dead
127.0.0.1 port: nothing here can leave the machine.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import signal
import socket
import ssl
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import trio
from pyngrok import installer, ngrok, process
from pyngrok.conf import PyngrokConfig
from pyngrok.exception import (
    PyngrokError,
    PyngrokNgrokError,
    PyngrokNgrokHTTPError,
    PyngrokNgrokInstallError,
)

_HERE = Path(__file__).resolve().parent
for _path, _module in (
    (_HERE.parents[1] / "services", "multichat"),
    (_HERE.parent, "ngrok_standin"),
):
    if importlib.util.find_spec(_module) is None:
        sys.path.insert(0, str(_path))

import ngrok_standin  # noqa: E402
from multichat.hosting import ngrok_errors, tunnel_supervision  # noqa: E402
from multichat.hosting import tunnel as tunnel_module  # noqa: E402
from multichat.hosting.ngrok_errors import TunnelError, classify  # noqa: E402
from multichat.hosting.tunnel import Tunnel, TunnelSettings, open_tunnel  # noqa: E402
from multichat.hosting.tunnel_supervision import (  # noqa: E402
    TunnelClosed,
    TunnelEvent,
    TunnelFailed,
    TunnelLog,
    TunnelOpened,
    TunnelOpening,
    TunnelReopening,
    supervise_tunnel,
)
from ngrok_standin import (  # noqa: E402
    BROWSER_USER_AGENT,
    FAIL_ENV,
    INTERSTITIAL_COOKIE,
    SKIP_WARNING_HEADER,
    StandinTLS,
    pid_alive,
)

TOKEN = "2qStandinAuthtoken_5vXk9RzTq3LmN8pWcY7d"  # looks like a real one; must never leak
OPEN_LIMIT = 10  # seconds for an agent that is behaving: it is up in well under one

E = TypeVar("E")


@dataclass
class Standin:
    """The stand-in agent as this test sees it: where it is, its config, what it recorded."""

    config: Path
    pidfile: Path
    statefile: Path
    tls: StandinTLS

    def settings(self, authtoken: str | None = TOKEN, **options: Any) -> TunnelSettings:
        return TunnelSettings(
            authtoken=authtoken,
            ngrok_path=ngrok_standin.ngrok_path(),
            config_path=str(self.config),
            **options,
        )

    def pid(self) -> int:
        pid = ngrok_standin.read_pid(self.pidfile)
        assert pid is not None, "no stand-in agent was started"
        return pid

    def pids(self) -> list[int]:
        return ngrok_standin.started_pids(self.statefile)

    def log(self) -> list[str]:
        """What every agent recorded: starts, endpoints opened and refused, exits."""
        return self.statefile.read_text(encoding="utf-8").splitlines()


def _clean_pyngrok() -> None:
    # pyngrok caches agents and tunnels in module globals; each test starts from nothing.
    for agent in list(process._current_processes.values()):
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(5)
    process._current_processes.clear()
    ngrok._current_tunnels.clear()


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Standin]:
    for name in (*ngrok_standin.SWITCHES, "NGROK_AUTHTOKEN", "NGROK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    # Even a default PyngrokConfig finds the stand-in, so pyngrok never wants to download.
    monkeypatch.setenv("PYNGROK_NGROK_PATH", ngrok_standin.ngrok_path())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    agent = Standin(
        config=ngrok_standin.write_config(tmp_path),
        pidfile=tmp_path / "agent.pid",
        statefile=tmp_path / "agent.state",
        tls=ngrok_standin.make_tls(tmp_path),
    )
    for name, value in agent.tls.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ngrok_standin.PIDFILE_ENV, str(agent.pidfile))
    monkeypatch.setenv(ngrok_standin.STATE_ENV, str(agent.statefile))
    monkeypatch.setenv(ngrok_standin.LIFETIME_ENV, "60")
    _clean_pyngrok()
    try:
        yield agent
    finally:
        _clean_pyngrok()
        ngrok_standin.kill_agents(agent.statefile)


async def _echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def start_server(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Any]) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def wait_gone(*pids: int) -> None:
    """Wait until each process has exited (Linux pidfds: readable once the process is dead)."""
    with trio.fail_after(5):
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # exited and reaped already
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                os.close(fd)
        assert not any(pid_alive(pid) for pid in pids)


async def next_event(receive: trio.MemoryReceiveChannel[TunnelEvent], kind: type[E]) -> E:
    async for event in receive:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} event")


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_address(url: str | None) -> tuple[str, int]:
    assert url is not None, "no TCP address"
    parts = urlsplit(url)
    assert parts.scheme == "tcp" and parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@dataclass
class Upstream:
    """A tiny HTTP server standing in for the room's: records each request head it is sent.

    A WebSocket upgrade is accepted (101) and then echoed, byte for byte.
    """

    heads: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            start, *lines = head.decode("latin-1").split("\r\n")
            headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
            self.heads.append({"start": start, "headers": headers})
            if any(name.lower() == "upgrade" for name, _ in headers):
                await stream.send_all(
                    b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + rest
                )
                await _echo(stream)
                return
            body = b"hello from upstream"
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )

    def header(self, index: int, name: str) -> list[str]:
        return [v for k, v in self.heads[index]["headers"] if k.lower() == name.lower()]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


async def https_get(
    url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None, path: str = "/"
) -> Reply:
    """GET `path` from an https:// URL with the standard library's client, in a thread."""

    def get() -> Reply:
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.hostname is not None
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context, timeout=OPEN_LIMIT
        )
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    return await trio.to_thread.run_sync(get)


# --------------------------------------------------------------------------- open_tunnel


async def test_one_agent_serves_https_and_tcp_and_close_stops_it(standin: Standin) -> None:
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, upstream)
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings())
            assert isinstance(tunnel, Tunnel)
            assert tunnel.https_url.startswith("https://localhost:")
            assert tunnel.tcp_url is not None and tunnel.tcp_url.startswith("tcp://127.0.0.1:")
            assert tunnel.tcp_error is None
            assert tunnel.pid == standin.pid() and standin.pids() == [tunnel.pid]
            assert tunnel.agent_running
            reply = await https_get(tunnel.https_url, standin.tls.client_context())
            assert (reply.status, reply.body) == (200, b"hello from upstream")
            # The same upstream port gets the TCP endpoint's bytes.
            raw = await trio.open_tcp_stream(*tcp_address(tunnel.tcp_url))
            async with raw:
                await raw.send_all(b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
                assert b"hello from upstream" in await raw.receive_some()
            await tunnel.close()
        nursery.cancel_scope.cancel()
    await wait_gone(tunnel.pid)
    log = standin.log()
    assert any(line.startswith("endpoint name=multichat-https url=https://") for line in log)
    assert any(line.startswith("endpoint name=multichat-tcp url=tcp://") for line in log)
    # A polite stop (SIGTERM) lets the real agent close its session in ngrok's cloud.
    assert f"exited pid={tunnel.pid} reason=sigterm" in log
    assert [head["start"] for head in upstream.heads] == ["GET / HTTP/1.1", "GET /raw HTTP/1.1"]
    tunnel.close_nowait()  # idempotent


async def test_without_tcp_only_the_https_endpoint_opens(standin: Standin) -> None:
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, Upstream())
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings(tcp=False))
            assert (tunnel.tcp_url, tunnel.tcp_error) == (None, None)
            reply = await https_get(tunnel.https_url, standin.tls.client_context())
            assert reply.status == 200
            await tunnel.close()
        nursery.cancel_scope.cancel()
    assert not any("multichat-tcp" in line for line in standin.log())


async def test_https_forwards_with_the_friends_address_as_ngrok_does(standin: Standin) -> None:
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, upstream)
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings(tcp=False))
            context = standin.tls.client_context()
            host = urlsplit(tunnel.https_url).netloc
            await https_get(tunnel.https_url, context, path="/room?x=1")
            # A client's own X-Forwarded-For is kept, and the address ngrok saw goes last:
            # only that one can be believed.
            await https_get(tunnel.https_url, context, {"X-Forwarded-For": "203.0.113.9"})
            await tunnel.close()
        nursery.cancel_scope.cancel()

    assert upstream.heads[0]["start"] == "GET /room?x=1 HTTP/1.1"
    assert upstream.header(0, "Host") == [host], "Host is forwarded unchanged"
    assert upstream.header(0, "X-Forwarded-For") == ["127.0.0.1"]
    assert upstream.header(0, "X-Forwarded-Proto") == ["https"]
    assert upstream.header(0, "X-Forwarded-Host") == [host]
    assert upstream.header(1, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]


async def test_https_forwards_a_websocket_upgrade_and_pipes_it(standin: Standin) -> None:
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, upstream)
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings(tcp=False))
            parts = urlsplit(tunnel.https_url)
            assert parts.hostname is not None and parts.port is not None
            raw = await trio.open_tcp_stream(parts.hostname, parts.port)
            stream = trio.SSLStream(
                raw,
                standin.tls.client_context(),
                server_hostname=parts.hostname,
                https_compatible=True,
            )
            async with stream:
                await stream.send_all(
                    f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nUser-Agent: {BROWSER_USER_AGENT}\r\n"
                    f"Cookie: {INTERSTITIAL_COOKIE}={parts.hostname}\r\n\r\n".encode()
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive_some()
                assert answer.startswith(b"HTTP/1.1 101 ")
                for payload in (b"first frame", b"second frame"):
                    await stream.send_all(payload)
                    echoed = b""
                    while len(echoed) < len(payload):
                        echoed += await stream.receive_some()
                    assert echoed == payload
            await tunnel.close()
        nursery.cancel_scope.cancel()
    [head] = upstream.heads
    assert upstream.header(0, "Connection") == ["Upgrade"], "an upgrade is not closed"
    assert upstream.header(0, "X-Forwarded-For") == ["127.0.0.1"]
    assert head["start"] == "GET /ws HTTP/1.1"


async def test_the_free_plans_browser_warning_and_the_ways_past_it(standin: Standin) -> None:
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, upstream)
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings(tcp=False))
            context = standin.tls.client_context()
            browser = {"User-Agent": BROWSER_USER_AGENT}

            warning = await https_get(tunnel.https_url, context, browser)
            assert upstream.heads == [], "the warning is ngrok's: the room never sees it"
            page = warning.body.decode()
            assert warning.status == 200
            assert warning.headers["Ngrok-Error-Code"] == "ERR_NGROK_6024"
            assert "You are about to visit" in page and ">Visit Site</button>" in page
            assert SKIP_WARNING_HEADER in page, "it tells the developer how to skip it"
            # What the button does in the browser: set the cookie for this host, reload.
            assert f'document.cookie = "{INTERSTITIAL_COOKIE}=" + location.hostname' in page
            assert "location.reload()" in page

            hostname = urlsplit(tunnel.https_url).hostname
            with_cookie = {**browser, "Cookie": f"theme=dark; {INTERSTITIAL_COOKIE}={hostname}"}
            assert (await https_get(tunnel.https_url, context, with_cookie)).status == 200
            with_header = {**browser, SKIP_WARNING_HEADER: "1"}
            assert (await https_get(tunnel.https_url, context, with_header)).status == 200
            not_a_browser = {"User-Agent": "multichat/0.1"}
            assert (await https_get(tunnel.https_url, context, not_a_browser)).status == 200
            # A cookie for some other host does not count.
            other = {**browser, "Cookie": f"{INTERSTITIAL_COOKIE}=elsewhere.example"}
            again = await https_get(tunnel.https_url, context, other)
            assert again.headers["Ngrok-Error-Code"] == "ERR_NGROK_6024"
            await tunnel.close()
        nursery.cancel_scope.cancel()
    assert len(upstream.heads) == 3, "cookie, header and a non-browser got through; no more"


async def test_https_to_a_dead_upstream_is_ngroks_8012_page(standin: Standin) -> None:
    port = dead_port()
    with trio.fail_after(OPEN_LIMIT):
        tunnel = await open_tunnel("127.0.0.1", port, standin.settings(tcp=False))
        try:
            reply = await https_get(tunnel.https_url, standin.tls.client_context())
        finally:
            await tunnel.close()
    assert reply.status == 502
    assert reply.headers["Ngrok-Error-Code"] == "ERR_NGROK_8012"
    page = reply.body.decode()
    assert "failed to establish a connection to the upstream web service" in page
    assert f"dial tcp 127.0.0.1:{port}: connect: connection refused" in page


async def test_a_card_required_refusal_costs_only_the_tcp_address(
    standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_ENV, "card_required")
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, upstream)
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings(proxy_proto=2))
            assert tunnel.tcp_url is None
            error = tunnel.tcp_error
            assert error is not None
            assert (error.code, error.ngrok_code, error.permanent) == (
                "card_required",
                "ERR_NGROK_8013",
                True,
            )
            assert "HTTPS" in error.fix and "card" in error.fix and "\n" not in error.fix
            assert tunnel.agent_running, "the agent keeps serving the HTTPS endpoint"
            reply = await https_get(tunnel.https_url, standin.tls.client_context())
            assert reply.status == 200
            await tunnel.close()
        nursery.cancel_scope.cancel()
    assert "refused name=multichat-tcp err=ERR_NGROK_8013" in standin.log()
    await wait_gone(tunnel.pid)


async def test_pyngrok_v2_tunnels_api_opens_an_https_endpoint_too(standin: Standin) -> None:
    # Not what multichat uses; the stand-in speaks it so that either pyngrok mode can drive it.
    config = PyngrokConfig(
        ngrok_path=ngrok_standin.ngrok_path(),
        config_path=str(standin.config),
        auth_token=TOKEN,
        config_version="2",
    )
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, upstream)
        with trio.fail_after(OPEN_LIMIT):
            opened = await trio.to_thread.run_sync(
                partial(ngrok.connect, addr=str(port), proto="http", pyngrok_config=config)
            )
            try:
                assert opened.public_url is not None
                assert opened.public_url.startswith("https://localhost:")
                assert opened.proto == "https"
                reply = await https_get(opened.public_url, standin.tls.client_context())
                assert reply.status == 200
            finally:
                await trio.to_thread.run_sync(ngrok.kill, config)
        nursery.cancel_scope.cancel()
    assert upstream.header(0, "X-Forwarded-For") == ["127.0.0.1"]


@pytest.mark.parametrize("version", [1, 2])
async def test_proxy_header_carries_the_real_client_address(standin: Standin, version: int) -> None:
    seen: list[bytes] = []

    async def record(stream: trio.SocketStream) -> None:
        data = b""
        async for chunk in stream:
            data += chunk
            if data.endswith(b"ping"):
                seen.append(data)
                await stream.send_all(b"pong")
                return

    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, record)
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings(proxy_proto=version))
            public = tcp_address(tunnel.tcp_url)
            client = await trio.open_tcp_stream(*public)
            client_port = client.socket.getsockname()[1]
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some() == b"pong"
            await tunnel.close()
        nursery.cancel_scope.cancel()

    [data] = seen
    if version == 2:
        assert data.startswith(b"\r\n\r\n\x00\r\nQUIT\n")
        assert data[12:14] == b"\x21\x11"  # v2 PROXY command, TCP over IPv4
        (length,) = struct.unpack("!H", data[14:16])
        src, dst = socket.inet_ntoa(data[16:20]), socket.inet_ntoa(data[20:24])
        src_port, dst_port = struct.unpack("!HH", data[24:28])
        assert (src, src_port) == ("127.0.0.1", client_port)
        assert (dst, dst_port) == public
        assert data[16 + length :] == b"ping"
    else:
        header = f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {public[1]}\r\n"
        assert data == header.encode() + b"ping"


# card_required is not here: it refuses the TCP endpoint only (see above).
_SESSION_AND_API_FAILURES = [
    ("bad_authtoken", "bad_authtoken", "ERR_NGROK_105"),
    ("agent_already_running", "agent_already_running", "ERR_NGROK_108"),
    ("endpoint_in_use", "endpoint_in_use", "ERR_NGROK_334"),
]


@pytest.mark.parametrize(
    ("switch", "code", "ngrok_code", "token_from"),
    [(None, "no_authtoken", "ERR_NGROK_4018", None)]
    + [
        (*case, token_from)
        for case in _SESSION_AND_API_FAILURES
        for token_from in ("settings", "config")
    ],
)
async def test_agent_failures_are_classified_without_the_token(
    standin: Standin,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    switch: str | None,
    code: str,
    ngrok_code: str,
    token_from: str | None,
) -> None:
    if switch is not None:
        monkeypatch.setenv(FAIL_ENV, switch)
    if token_from == "config":
        ngrok_standin.write_config(standin.config.parent, authtoken=TOKEN)
    lines: list[str] = []
    settings = standin.settings(authtoken=TOKEN if token_from == "settings" else None, verbose=True)

    with trio.fail_after(OPEN_LIMIT), pytest.raises(TunnelError) as caught:
        await open_tunnel("127.0.0.1", dead_port(), settings, on_log=lines.append)

    error = caught.value
    assert (error.code, error.ngrok_code) == (code, ngrok_code)
    assert error.permanent == (code in {"no_authtoken", "bad_authtoken"})
    assert error.fix.strip() and "\n" not in error.fix
    assert ngrok_code in error.detail
    assert lines, "verbose mode forwards ngrok's log lines"
    for text in (str(error), repr(error), error.fix, error.detail, repr(settings), *lines):
        assert TOKEN not in text
    # pyngrok logs agent lines from its monitor thread, racing the API's answer: so only check
    # that whatever it did log has no token in it.
    assert TOKEN not in caplog.text
    assert error.__cause__ is None and error.__suppress_context__  # no raw pyngrok text attached
    await wait_gone(*standin.pids())


async def test_missing_binary_is_reported_and_never_downloaded(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("pyngrok tried to download ngrok")

    monkeypatch.setattr(installer, "install_ngrok", no_download)
    settings = TunnelSettings(
        authtoken=TOKEN, ngrok_path=str(tmp_path / "nowhere" / "ngrok"), config_path=None
    )
    with trio.fail_after(OPEN_LIMIT), pytest.raises(TunnelError) as caught:
        await open_tunnel("127.0.0.1", dead_port(), settings)
    assert caught.value.code == "binary_missing"
    assert caught.value.permanent
    assert "--ngrok-path" in caught.value.fix
    assert standin.pids() == []


async def test_failed_download_is_reported(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The real installer runs, but every way out leads to a dead port on this machine.
    dead = f"http://127.0.0.1:{dead_port()}"
    monkeypatch.setattr(installer, "get_ngrok_cdn_url", lambda *a, **k: f"{dead}/ngrok.tgz")
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(tmp_path / "bin" / "ngrok"))
    settings = TunnelSettings(authtoken=TOKEN, ngrok_path=None, config_path=str(standin.config))

    with trio.fail_after(OPEN_LIMIT), pytest.raises(TunnelError) as caught:
        await open_tunnel("127.0.0.1", dead_port(), settings)
    assert caught.value.code == "download_failed"
    assert "offline?" in caught.value.fix and "--ngrok-path" in caught.value.fix
    assert standin.pids() == []


@pytest.mark.parametrize("switch", ["silent", "silent_api"])
async def test_silent_agent_is_abandoned_at_the_callers_deadline_and_killed(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    monkeypatch.setenv(FAIL_ENV, switch)
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError), trio.fail_after(3):
        await open_tunnel("127.0.0.1", dead_port(), standin.settings())
    assert trio.current_time() - started < 4
    pid = standin.pid()
    await wait_gone(pid)
    assert classify(trio.TooSlowError()).code == "deadline"


async def test_a_tcp_endpoint_that_never_comes_costs_only_the_tcp_address(
    standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_ENV, "silent_tcp")
    monkeypatch.setattr(tunnel_module, "API_REQUEST_TIMEOUT", 0.5)
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, Upstream())
        with trio.fail_after(OPEN_LIMIT):
            tunnel = await open_tunnel("127.0.0.1", port, standin.settings())
            assert tunnel.tcp_url is None
            assert tunnel.tcp_error is not None and tunnel.tcp_error.code == "deadline"
            assert (await https_get(tunnel.https_url, standin.tls.client_context())).status == 200
            await tunnel.close()
        nursery.cancel_scope.cancel()
    await wait_gone(tunnel.pid)


async def test_abandoned_while_asking_for_tcp_the_agent_is_killed(
    standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's deadline falls after the HTTPS endpoint opened, while TCP is being asked for.
    monkeypatch.setenv(FAIL_ENV, "silent_tcp")
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError), trio.fail_after(2):
        await open_tunnel("127.0.0.1", dead_port(), standin.settings())
    assert trio.current_time() - started < 3
    assert any(line.startswith("endpoint name=multichat-https") for line in standin.log())
    await wait_gone(*standin.pids())
    assert len(standin.pids()) == 1, "no agent started after the one that was abandoned"
    assert process._current_processes == {}


# --------------------------------------------------------------------------- supervise_tunnel


class Recorder:
    """A `report` callback: keeps every event, and lets the test wait for the next ones."""

    def __init__(self) -> None:
        self.events: list[TunnelEvent] = []
        self._send, self.receive = trio.open_memory_channel[TunnelEvent](1000)

    def __call__(self, event: TunnelEvent) -> None:
        self.events.append(event)
        self._send.send_nowait(event)

    def kinds(self) -> list[type[Any]]:
        return [type(e) for e in self.events if not isinstance(e, TunnelLog)]


async def assert_reachable(opened: TunnelOpened, standin: Standin) -> None:
    """The room's upstream answers through the HTTPS link, and through the TCP address if any."""
    reply = await https_get(opened.https, standin.tls.client_context())
    assert (reply.status, reply.body) == (200, b"hello from upstream")
    address = opened.tcp_address()
    if address is not None:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"hello from upstream" not in received:
                chunk = await stream.receive_some()
                assert chunk, "the TCP endpoint closed before the answer"
                received += chunk


@pytest.mark.parametrize("how", ["killed", "died"])
async def test_supervisor_reopens_both_endpoints_at_new_addresses(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(tunnel_supervision, "REOPEN_FIRST_DELAY", 0.1)
    if how == "died":
        monkeypatch.setenv(ngrok_standin.DIE_AFTER_ENV, "1")
    report = Recorder()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, Upstream())
        with trio.fail_after(OPEN_LIMIT):
            settings = standin.settings(verbose=True)
            first = await nursery.start(supervise_tunnel, "127.0.0.1", port, settings, report)
            opened = await next_event(report.receive, TunnelOpened)
            assert opened == first
            assert opened.tcp is not None and opened.tcp_error is None
            await assert_reachable(opened, standin)
            first_pid = standin.pid()
            if how == "killed":
                os.kill(first_pid, signal.SIGKILL)  # the agent this test started
            failed = await next_event(report.receive, TunnelFailed)
            assert failed.error.code == "agent_died"
            reopened = await next_event(report.receive, TunnelOpened)
            assert reopened.https != opened.https and reopened.tcp != opened.tcp
            assert reopened.tcp is not None
            await assert_reachable(reopened, standin)
            second_pid = standin.pid()
            assert second_pid != first_pid
        nursery.cancel_scope.cancel()

    assert report.kinds()[:6] == [
        TunnelOpening,
        TunnelOpened,
        TunnelFailed,
        TunnelReopening,
        TunnelOpening,
        TunnelOpened,
    ]
    assert report.kinds()[-1] is TunnelClosed
    reopening = next(e for e in report.events if isinstance(e, TunnelReopening))
    assert (reopening.attempt, reopening.delay) == (1, 0.1)
    assert any(
        isinstance(e, TunnelLog) and "tunnel session started" in e.line for e in report.events
    )
    await wait_gone(first_pid, second_pid)


async def test_supervisor_says_once_that_tcp_needs_a_card_and_keeps_https(
    standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tunnel_supervision, "REOPEN_FIRST_DELAY", 0.1)
    monkeypatch.setenv(FAIL_ENV, "card_required")
    report = Recorder()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, Upstream())
        with trio.fail_after(OPEN_LIMIT):
            settings = standin.settings(proxy_proto=2)
            first = await nursery.start(supervise_tunnel, "127.0.0.1", port, settings, report)
            assert isinstance(first, TunnelOpened) and first.tcp is None
            assert first.tcp_error is not None and first.tcp_error.code == "card_required"
            await assert_reachable(first, standin)
            os.kill(standin.pid(), signal.SIGKILL)  # the agent this test started
            reopened = await next_event(report.receive, TunnelOpened)
            assert reopened == first  # the event that started it came through the channel
            reopened = await next_event(report.receive, TunnelOpened)
            assert (reopened.tcp, reopened.tcp_error) == (None, None), "said once only"
            await assert_reachable(reopened, standin)
        nursery.cancel_scope.cancel()
    assert not any(
        isinstance(e, TunnelFailed) and e.error.code == "card_required" for e in report.events
    ), "a refused TCP endpoint is no failure of the tunnel"
    refusals = [line for line in standin.log() if line.startswith("refused ")]
    assert refusals == ["refused name=multichat-tcp err=ERR_NGROK_8013"], "asked once only"
    assert len(standin.pids()) == 2
    await wait_gone(*standin.pids())


async def test_supervisor_gives_up_at_once_on_what_only_the_user_can_fix(standin: Standin) -> None:
    report = Recorder()
    with trio.fail_after(OPEN_LIMIT):
        await supervise_tunnel("127.0.0.1", dead_port(), standin.settings(authtoken=None), report)
    assert report.kinds() == [TunnelOpening, TunnelFailed, TunnelClosed]
    failed = report.events[1]
    assert isinstance(failed, TunnelFailed) and failed.error.code == "no_authtoken"
    await wait_gone(*standin.pids())


async def test_supervisor_bounds_each_attempt_and_the_number_of_retries(
    standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_ENV, "silent")
    monkeypatch.setattr(tunnel_module, "OPEN_DEADLINE", 1.0)
    monkeypatch.setattr(tunnel_supervision, "OPEN_DEADLINE", 1.0)
    monkeypatch.setattr(tunnel_supervision, "REOPEN_FIRST_DELAY", 0.1)
    monkeypatch.setattr(tunnel_supervision, "MAX_REOPEN_ATTEMPTS", 1)
    report = Recorder()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(OPEN_LIMIT):
            first = await nursery.start(
                supervise_tunnel, "127.0.0.1", dead_port(), standin.settings(), report
            )
    assert first is None
    assert report.kinds() == [
        TunnelOpening,
        TunnelFailed,
        TunnelReopening,
        TunnelOpening,
        TunnelFailed,
        TunnelClosed,
    ]
    codes = [e.error.code for e in report.events if isinstance(e, TunnelFailed)]
    assert codes == ["deadline", "deadline"]
    assert len(standin.pids()) == 2
    await wait_gone(*standin.pids())


async def test_cancelling_the_supervisor_stops_the_agent(standin: Standin) -> None:
    report = Recorder()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, _echo)
        with trio.fail_after(OPEN_LIMIT):
            opened = await nursery.start(
                supervise_tunnel, "127.0.0.1", port, standin.settings(), report
            )
        assert isinstance(opened, TunnelOpened)
        pid = standin.pid()
        assert pid_alive(pid)
        nursery.cancel_scope.cancel()
    await wait_gone(pid)
    assert f"exited pid={pid} reason=sigterm" in standin.statefile.read_text()
    assert report.kinds() == [TunnelOpening, TunnelOpened, TunnelClosed]
    assert process._current_processes == {}


# --------------------------------------------------------------------------- classify


def _error_log(err: str) -> PyngrokNgrokError:
    return PyngrokNgrokError(f"The ngrok process errored on start: {err}.", [], err)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (trio.TooSlowError(), "deadline"),
        (
            _error_log("authentication failed: Usage of ngrok ...\\r\\n\\r\\nERR_NGROK_4018\\r\\n"),
            "no_authtoken",
        ),
        (
            _error_log(f"Your authtoken: {TOKEN}\\nInstructions\\r\\n\\r\\nERR_NGROK_105\\r\\n"),
            "bad_authtoken",
        ),
        (
            _error_log("Your authtoken is properly formed, but it is invalid. ERR_NGROK_107"),
            "bad_authtoken",
        ),
        (
            PyngrokNgrokHTTPError(
                "ngrok client exception, API returned 502",
                "http://127.0.0.1:4040/api/endpoints",
                502,
                "Bad Gateway",
                {},
                '{"error_code":103,"status_code":502,"msg":"failed to start tunnel","details":'
                '{"err":"failed to start tunnel: You must add a credit or debit card ...'
                '\\r\\n\\r\\nERR_NGROK_8013\\r\\n"}}',
            ),
            "card_required",
        ),
        (
            PyngrokNgrokInstallError("An error occurred while downloading ngrok: <urlopen error>"),
            "download_failed",
        ),
        (FileNotFoundError(2, "No such file or directory"), "binary_missing"),
        (
            PyngrokNgrokError(
                'ngrok binary was not found. Be sure to call "ngrok.install_ngrok()"'
            ),
            "binary_missing",
        ),
        (PyngrokNgrokError("The ngrok process was unable to start.", []), "agent_died"),
        (
            PyngrokError('"log_format" must be "term" to be compatible with pyngrok'),
            "config_invalid",
        ),
        (ValueError("something else"), "unknown"),
    ],
)
def test_classify(exc: BaseException, code: str) -> None:
    error = classify(exc)
    assert error.code == code
    assert error.fix.strip() and "\n" not in error.fix
    assert TOKEN not in str(error) and TOKEN not in error.detail


def test_every_code_has_a_one_line_fix_and_settings_hide_the_token() -> None:
    for code in ngrok_errors._FIXES:
        error = TunnelError(code)
        assert error.code == code and error.fix and "\n" not in error.fix
    with pytest.raises(ValueError):
        TunnelError("no_such_code")
    assert TOKEN not in repr(TunnelSettings(authtoken=TOKEN))
    with pytest.raises(ValueError):
        TunnelSettings(proxy_proto=3)
