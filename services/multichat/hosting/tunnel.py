"""Public addresses for the room, through ngrok, kept open for as long as the room runs.

One ngrok agent serves two endpoints to the room: an HTTPS one, always (a link that browsers
open, and that `multichat connect` reaches over WebSocket), and a TCP one when the account allows
it. Since 2024 ngrok's free plan opens TCP endpoints only for accounts with a card on file
(ERR_NGROK_8013) while HTTPS endpoints need none; so a refused TCP endpoint is a note on an
open tunnel, never its failure.

Talks to the ngrok agent through pyngrok only. pyngrok is synchronous and waits as long as the
agent keeps it waiting, so each call runs in a worker thread that trio may abandon; whoever
abandons one kills the agent process pyngrok started for it. Callers bound `open_tunnel` with
`trio.fail_after` (tunnel_supervision.py keeps the tunnel open and bounds itself). Failures
become a `TunnelError` with a stable `code` and a one-line `fix` for the user. No message, log
line or exception chain here carries the authtoken: ngrok itself echoes it back when it
rejects it.

pyngrok keeps one agent process per `ngrok_path` and shares it between tunnels; a `Tunnel` owns
its agent, so keep one tunnel per `ngrok_path` at a time (multichat needs only one: ngrok's free
plan allows one agent session per account anyway, ERR_NGROK_108).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
from pyngrok import ngrok, process
from pyngrok.conf import PyngrokConfig
from pyngrok.exception import PyngrokError, PyngrokNgrokURLError
from pyngrok.log import NgrokLog
from pyngrok.process import NgrokProcess

from .ngrok_errors import TunnelError, classify, redact

OPEN_DEADLINE = 30.0  # the agent is up in about a second; after 30 it is not coming
API_REQUEST_TIMEOUT = 4.0  # pyngrok's default; the agent's API is on this machine
AGENT_EXIT_GRACE = 2.0  # ngrok closes its cloud session on SIGTERM in well under a second
# Delete the endpoints (one API_REQUEST_TIMEOUT for all of them), stop, then give up: kill.
CLOSE_DEADLINE = AGENT_EXIT_GRACE + API_REQUEST_TIMEOUT + 1.0
REAP_WINDOW = 10.0  # an abandoned start may still spawn its agent this late (pyngrok's yaml load)
REAP_POLL = 0.05  # how often that late agent is looked for; a few hundred checks at most
# The endpoints' names in the agent (and in its log and web UI).
HTTPS_ENDPOINT_NAME = "multichat-https"
TCP_ENDPOINT_NAME = "multichat-tcp"


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """How to reach ngrok. `None` means pyngrok's default (and the user's own ngrok config)."""

    authtoken: str | None = field(
        default_factory=lambda: os.environ.get("NGROK_AUTHTOKEN") or None, repr=False
    )
    ngrok_path: str | None = None  # None: pyngrok's own copy, downloaded on first use
    config_path: str | None = None
    verbose: bool = False  # forward ngrok's own log lines to the caller
    proxy_proto: int | None = None  # PROXY protocol version (1 or 2) the TCP endpoint sends
    tcp: bool = True  # ask for a TCP endpoint beside the HTTPS one

    def __post_init__(self) -> None:
        if self.proxy_proto not in (None, 1, 2):
            raise ValueError(f"proxy_proto must be 1, 2 or None, not {self.proxy_proto!r}")


class Tunnel:
    """The room's open ngrok endpoints and the agent process serving them; closing one ends all.

    `https_url` is always there; `tcp_url` is None when the TCP endpoint was not asked for or
    was refused, and then `tcp_error` says why (ERR_NGROK_8013 on ngrok's free plan).
    """

    def __init__(
        self, https_url: str, agent: NgrokProcess, endpoint_uri: str | None, ngrok_path: str
    ) -> None:
        parts = urlsplit(https_url)
        if parts.scheme != "https" or not parts.hostname:
            raise TunnelError("unknown", f"ngrok gave a link we cannot use: {https_url}")
        self.https_url = https_url  # e.g. "https://a1b2-203-0-113-7.ngrok-free.app"
        self.tcp_url: str | None = None  # e.g. "tcp://0.tcp.ngrok.io:12345"
        self.tcp_error: TunnelError | None = None
        self.pid: int = agent.proc.pid
        self._agent = agent
        self._endpoint_uris = [endpoint_uri] if endpoint_uri else []
        self._ngrok_path = ngrok_path

    def __repr__(self) -> str:
        return f"<Tunnel {self.https_url} {self.tcp_url or '(no tcp)'} pid={self.pid}>"

    @property
    def agent_running(self) -> bool:
        """Whether the agent process is still running."""
        return self._agent.proc.poll() is None

    async def wait_agent_exit(self) -> int:
        """Wait until the agent process exits (it crashed, was killed, or we closed it)."""
        return await trio.to_thread.run_sync(self._agent.proc.wait, abandon_on_cancel=True)

    async def close(self) -> None:
        """Delete the endpoints, then stop the agent: SIGTERM, SIGKILL if it lingers."""
        try:
            await trio.to_thread.run_sync(self._close_blocking, abandon_on_cancel=True)
        finally:
            self.close_nowait()

    def close_nowait(self) -> None:
        """Kill the agent at once (SIGKILL). Safe to call more than once."""
        _kill(self._agent, self._ngrok_path)
        for url in (self.https_url, self.tcp_url):
            if url is not None:
                ngrok._current_tunnels.pop(url, None)

    def _open_tcp_blocking(self, config: PyngrokConfig, upstream: dict[str, str]) -> None:
        """Ask this tunnel's agent for the TCP endpoint too; runs in a worker thread.

        Straight to the agent's API, not through `ngrok.connect`: that starts a new agent when
        it finds ours gone, and a TCP endpoint never outlives the agent serving the HTTPS one.
        The options are the ones `ngrok.connect(proto="tcp", upstream=...)` sends (config v3).
        """
        options: dict[str, Any] = {
            "name": TCP_ENDPOINT_NAME,
            "url": "tcp://",
            "inspect": False,
            "upstream": upstream,
        }
        try:
            data = ngrok.api_request(
                f"{self._agent.api_url}/api/endpoints",
                method="POST",
                data=options,
                timeout=config.request_timeout,
            )
            endpoint = ngrok.NgrokTunnel(data, config, self._agent.api_url)
        except Exception as exc:
            error = classify(exc, authtoken=config.auth_token)
            if error.code == "agent_died" and self.agent_running:
                # The API did not answer in time, yet the agent lives on (and serves HTTPS).
                error = TunnelError("deadline", detail=error.detail)
            self.tcp_error = error
            return
        parts = urlsplit(endpoint.public_url or "")
        if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
            self.tcp_error = TunnelError(
                "unknown", f"ngrok gave an address we cannot use: {endpoint.public_url}"
            )
            return
        self.tcp_url = endpoint.public_url
        if endpoint.uri:
            self._endpoint_uris.append(endpoint.uri)

    def _close_blocking(self) -> None:
        proc = self._agent.proc
        if proc.poll() is None and self._agent.api_url:
            # Deleting first releases the addresses in ngrok's cloud even if the stop goes wrong.
            # The deletes share one request timeout: an agent that is slow to answer one will
            # not answer the next any sooner.
            deadline = time.monotonic() + API_REQUEST_TIMEOUT
            for uri in self._endpoint_uris:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ngrok.api_request(f"{self._agent.api_url}{uri}", method="DELETE", timeout=left)
                except PyngrokNgrokURLError:
                    break  # not answering: stopping it is all that is left
                except PyngrokError:
                    continue
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(AGENT_EXIT_GRACE)
        except subprocess.TimeoutExpired:
            _kill(self._agent, self._ngrok_path)
            proc.wait(AGENT_EXIT_GRACE)


async def open_tunnel(
    host: str,
    port: int,
    settings: TunnelSettings,
    *,
    on_log: Callable[[str], None] | None = None,
) -> Tunnel:
    """Open public addresses for the server at `host:port`, starting an ngrok agent for them.

    The HTTPS endpoint forwards HTTP (and WebSocket upgrades) to `http://host:port`; the TCP
    endpoint, when `settings.tcp`, forwards bytes to `host:port` after a PROXY header if
    `settings.proxy_proto`. A refused TCP endpoint leaves the tunnel open: `tcp_error` says why.
    Put a deadline around it (`trio.fail_after`): a silent agent makes pyngrok wait forever. On
    cancellation the agent is killed. With `settings.verbose`, `on_log` gets each of ngrok's log
    lines (authtoken removed), called from a pyngrok thread: it must be thread-safe and quick.
    Raises `TunnelError` when there is no HTTPS endpoint.
    """
    config = _pyngrok_config(settings, on_log)
    start = _AgentStart(config, settings.authtoken)
    try:
        return await trio.to_thread.run_sync(
            start.run, host, port, settings.proxy_proto, settings.tcp, abandon_on_cancel=True
        )
    except TunnelError:
        raise
    except BaseException:
        start.abandon()
        raise


def _pyngrok_config(
    settings: TunnelSettings, on_log: Callable[[str], None] | None
) -> PyngrokConfig:
    # Given a path that does not exist, pyngrok would download an agent to it: refuse instead.
    if settings.ngrok_path is not None and not os.path.isfile(settings.ngrok_path):
        raise TunnelError("binary_missing", f"no ngrok agent at {settings.ngrok_path}")
    callback: Callable[[NgrokLog], None] | None = None
    if settings.verbose and on_log is not None:
        forward, token = on_log, settings.authtoken

        def callback(log: NgrokLog) -> None:
            forward(redact(log.line, token))

    return PyngrokConfig(
        ngrok_path=settings.ngrok_path,
        config_path=settings.config_path,
        auth_token=settings.authtoken,
        # The monitor keeps reading the agent's stdout: a full pipe would freeze the agent.
        monitor_thread=True,
        log_event_callback=callback,
        # pyngrok only looks at this between log lines; our callers' deadlines do the real work.
        startup_timeout=int(OPEN_DEADLINE),
        request_timeout=API_REQUEST_TIMEOUT,
        # Ctrl-C in a terminal signals the whole process group: in a group of its own, the
        # agent lives until the room has told everyone it is closing, then we stop it. (pyngrok
        # ignores this off POSIX.)
        start_new_session=os.name == "posix",
    )


class _AgentStart:
    """Start an agent and its endpoints in a worker thread, and the means to abandon it safely.

    Only the first step, `ngrok.connect` for the HTTPS endpoint, may start an agent; the TCP
    endpoint is asked of that agent alone.
    """

    def __init__(self, config: PyngrokConfig, authtoken: str | None) -> None:
        self._config = config
        self._authtoken = authtoken
        self._lock = threading.Lock()
        self._abandoned = False
        self._finished = False
        self._agent: NgrokProcess | None = None

    def run(self, host: str, port: int, proxy_proto: int | None, tcp: bool) -> Tunnel:
        """Runs in the worker thread."""
        path = self._config.ngrok_path
        with self._lock:
            if self._abandoned:
                raise TunnelError("deadline")  # nobody is waiting for this any more
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"  # the agent dials our server; a wildcard address is not dialable
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        tcp_upstream = {"url": address}
        if proxy_proto is not None:
            tcp_upstream["proxy_protocol"] = str(proxy_proto)
        try:
            # v3 endpoint options, the upstream given in full: pyngrok's own translation of
            # `addr` mangles "host:port". No `url`: ngrok picks a random https:// address.
            endpoint = ngrok.connect(
                addr=f"http://{address}",
                proto="http",
                name=HTTPS_ENDPOINT_NAME,
                pyngrok_config=self._config,
                upstream={"url": f"http://{address}"},
            )
            agent = _registered_agent(path)
            if agent is None or endpoint.public_url is None:
                raise TunnelError("agent_died")
            tunnel = Tunnel(endpoint.public_url, agent, endpoint.uri, path)
        except BaseException as exc:
            with self._lock:
                self._finished = True
            agent = _registered_agent(path)
            if agent is not None:
                _kill(agent, path)  # pyngrok leaves a healthy agent running after an API error
            if not isinstance(exc, Exception):
                raise
            # Not chained: pyngrok's message may quote ngrok quoting the authtoken.
            raise classify(exc, authtoken=self._authtoken) from None
        if tcp:
            # Never raises: a refusal (ERR_NGROK_8013 on the free plan) lands in tcp_error.
            # An abandon meanwhile kills the agent, and this fails at once.
            tunnel._open_tcp_blocking(self._config, tcp_upstream)
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
            self._agent = agent
        if abandoned:
            tunnel.close_nowait()
            raise TunnelError("deadline")
        return tunnel

    def abandon(self) -> None:
        """Called from trio when the caller gave up: make sure no agent outlives the attempt."""
        path = self._config.ngrok_path
        with self._lock:
            self._abandoned = True
            finished, agent = self._finished, self._agent
        if finished:
            if agent is not None:  # it opened just as we gave up
                _kill(agent, path)
            return
        agent = _registered_agent(path)
        if agent is not None:
            _kill(agent, path)  # pyngrok's thread then sees EOF, gives up and returns
        else:
            threading.Thread(target=self._reap_late, daemon=True).start()

    def _reap_late(self) -> None:
        # The worker may not have spawned the agent yet; if it does, kill it when it appears.
        deadline = time.monotonic() + REAP_WINDOW
        while time.monotonic() < deadline:
            with self._lock:
                if self._finished:
                    return
            agent = _registered_agent(self._config.ngrok_path)
            if agent is not None:
                _kill(agent, self._config.ngrok_path)
                return
            time.sleep(REAP_POLL)


def _registered_agent(ngrok_path: str) -> NgrokProcess | None:
    # Read without pyngrok's lock: an abandoned start holds it for as long as its agent is silent.
    return process._current_processes.get(ngrok_path)


def _kill(agent: NgrokProcess, ngrok_path: str) -> None:
    with contextlib.suppress(OSError):
        agent.proc.kill()
    agent.stop_monitor_thread()
    if process._current_processes.get(ngrok_path) is agent:
        process._current_processes.pop(ngrok_path, None)


class _RedactAuthtoken(logging.Filter):
    """pyngrok logs every agent line, ngrok's echo of a rejected authtoken included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "authtoken" in record.msg.lower():
            record.msg = redact(record.msg, os.environ.get("NGROK_AUTHTOKEN"))
        return True


logging.getLogger("pyngrok.process.ngrok").addFilter(_RedactAuthtoken())
# pyngrok logs the agent's error lines at ERROR: without this, an application that has not set
# up logging would get them on stderr (logging's last resort), right across the chat screen.
logging.getLogger("pyngrok").addHandler(logging.NullHandler())
