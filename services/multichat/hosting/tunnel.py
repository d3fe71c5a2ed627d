"""A public TCP address for the room, through ngrok, kept open for as long as the room runs.

Talks to the ngrok agent through pyngrok only. pyngrok is synchronous and waits as long as the
agent keeps it waiting, so each call runs in a worker thread that trio may abandon; whoever
abandons one kills the agent process pyngrok started for it. Callers bound `open_tunnel` with
`trio.fail_after`; `supervise_tunnel` bounds itself. Failures become a `TunnelError` with a
stable `code` and a one-line `fix` for the user. No message, log line or exception chain here
carries the authtoken: ngrok itself echoes it back when it rejects it.

pyngrok keeps one agent process per `ngrok_path` and shares it between tunnels; a `Tunnel` owns
its agent, so keep one tunnel per `ngrok_path` at a time (multichat needs only one).
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
from urllib.parse import urlsplit

import trio
from pyngrok import ngrok, process
from pyngrok.conf import PyngrokConfig
from pyngrok.exception import (
    PyngrokError,
)
from pyngrok.log import NgrokLog
from pyngrok.process import NgrokProcess

from .ngrok_errors import TunnelError, classify, redact

OPEN_DEADLINE = 30.0  # the agent is up in about a second; after 30 it is not coming
REOPEN_FIRST_DELAY = 1.0  # a crashed agent usually starts again at once; the pause stops a hot loop
REOPEN_MAX_DELAY = 60.0  # never leave the room unreachable for longer than a minute between tries
MAX_REOPEN_ATTEMPTS = 8  # 1+2+4+...+60+60 s: about three minutes of trying, then we give up
STABLE_AFTER = 60.0  # a tunnel that stayed up this long was healthy: start backing off afresh
API_REQUEST_TIMEOUT = 4.0  # pyngrok's default; the agent's API is on this machine
AGENT_EXIT_GRACE = 2.0  # ngrok closes its cloud session on SIGTERM in well under a second
CLOSE_DEADLINE = AGENT_EXIT_GRACE + API_REQUEST_TIMEOUT + 1.0  # delete, stop, then give up: kill
REAP_WINDOW = 10.0  # an abandoned start may still spawn its agent this late (pyngrok's yaml load)
REAP_POLL = 0.05  # how often that late agent is looked for; a few hundred checks at most

# Errors that retrying cannot fix: the user has to act first.


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """How to reach ngrok. `None` means pyngrok's default (and the user's own ngrok config)."""

    authtoken: str | None = field(
        default_factory=lambda: os.environ.get("NGROK_AUTHTOKEN") or None, repr=False
    )
    ngrok_path: str | None = None  # None: pyngrok's own copy, downloaded on first use
    config_path: str | None = None
    verbose: bool = False  # forward ngrok's own log lines to the caller
    proxy_proto: int | None = None  # PROXY protocol version (1 or 2) sent to our server

    def __post_init__(self) -> None:
        if self.proxy_proto not in (None, 1, 2):
            raise ValueError(f"proxy_proto must be 1, 2 or None, not {self.proxy_proto!r}")


class Tunnel:
    """An open ngrok TCP tunnel and the agent process serving it; closing one ends both."""

    def __init__(
        self, public_url: str, agent: NgrokProcess, endpoint_uri: str | None, ngrok_path: str
    ) -> None:
        parts = urlsplit(public_url)
        if parts.hostname is None or parts.port is None:
            raise TunnelError("unknown", f"ngrok gave an address we cannot use: {public_url}")
        self.public_url = public_url  # e.g. "tcp://0.tcp.ngrok.io:12345"
        self.public_host: str = parts.hostname
        self.public_port: int = parts.port
        self.pid: int = agent.proc.pid
        self._agent = agent
        self._endpoint_uri = endpoint_uri
        self._ngrok_path = ngrok_path

    def __repr__(self) -> str:
        return f"<Tunnel {self.public_url} pid={self.pid}>"

    @property
    def agent_running(self) -> bool:
        """Whether the agent process is still running."""
        return self._agent.proc.poll() is None

    async def wait_agent_exit(self) -> int:
        """Wait until the agent process exits (it crashed, was killed, or we closed it)."""
        return await trio.to_thread.run_sync(self._agent.proc.wait, abandon_on_cancel=True)

    async def close(self) -> None:
        """Delete the endpoint, then stop the agent: SIGTERM, SIGKILL if it lingers."""
        try:
            await trio.to_thread.run_sync(self._close_blocking, abandon_on_cancel=True)
        finally:
            self.close_nowait()

    def close_nowait(self) -> None:
        """Kill the agent at once (SIGKILL). Safe to call more than once."""
        _kill(self._agent, self._ngrok_path)
        ngrok._current_tunnels.pop(self.public_url, None)

    def _close_blocking(self) -> None:
        proc = self._agent.proc
        if proc.poll() is None and self._agent.api_url and self._endpoint_uri:
            # Deleting first releases the address in ngrok's cloud even if the stop goes wrong.
            with contextlib.suppress(PyngrokError):
                ngrok.api_request(
                    f"{self._agent.api_url}{self._endpoint_uri}",
                    method="DELETE",
                    timeout=API_REQUEST_TIMEOUT,
                )
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
    """Open a public TCP address forwarding to `host:port`, starting an ngrok agent for it.

    Put a deadline around it (`trio.fail_after`): a silent agent makes pyngrok wait forever. On
    cancellation the agent is killed. With `settings.verbose`, `on_log` gets each of ngrok's log
    lines (authtoken removed), called from a pyngrok thread: it must be thread-safe and quick.
    Raises `TunnelError`.
    """
    config = _pyngrok_config(settings, on_log)
    start = _AgentStart(config, settings.authtoken)
    try:
        return await trio.to_thread.run_sync(
            start.run, host, port, settings.proxy_proto, abandon_on_cancel=True
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
    """One `ngrok.connect` in a worker thread, and the means to abandon it without a leak."""

    def __init__(self, config: PyngrokConfig, authtoken: str | None) -> None:
        self._config = config
        self._authtoken = authtoken
        self._lock = threading.Lock()
        self._abandoned = False
        self._finished = False
        self._agent: NgrokProcess | None = None

    def run(self, host: str, port: int, proxy_proto: int | None) -> Tunnel:
        """Runs in the worker thread."""
        path = self._config.ngrok_path
        with self._lock:
            if self._abandoned:
                raise TunnelError("deadline")  # nobody is waiting for this any more
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"  # the agent dials our server; a wildcard address is not dialable
        upstream: dict[str, str] = {"url": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"}
        if proxy_proto is not None:
            upstream["proxy_protocol"] = str(proxy_proto)
        try:
            # v3 endpoint options: pyngrok's own translation of `addr` mangles "host:port".
            endpoint = ngrok.connect(
                addr=upstream["url"],
                proto="tcp",
                name="multichat",
                pyngrok_config=self._config,
                upstream=upstream,
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


# --------------------------------------------------------------------------- supervision


@dataclass(frozen=True, slots=True)
class TunnelOpening:
    """An attempt to open the tunnel begins; `attempt` is 0 the first time."""

    attempt: int = 0


@dataclass(frozen=True, slots=True)
class TunnelOpened:
    """The room is reachable at `url` (a new address after every reopen)."""

    url: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TunnelFailed:
    """An attempt failed, or the open tunnel was lost; `error.fix` says what the user can do."""

    error: TunnelError


@dataclass(frozen=True, slots=True)
class TunnelReopening:
    """The next attempt, number `attempt`, starts in `delay` seconds."""

    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class TunnelClosed:
    """Supervision ended: no tunnel, no agent."""


@dataclass(frozen=True, slots=True)
class TunnelLog:
    """One of ngrok's own log lines, authtoken removed (only with `settings.verbose`)."""

    line: str


TunnelEvent = (
    TunnelOpening | TunnelOpened | TunnelFailed | TunnelReopening | TunnelClosed | TunnelLog
)


def reopen_delay(attempt: int) -> float:
    """Exponential backoff before reopen number `attempt` (1, 2, ...)."""
    return float(min(REOPEN_MAX_DELAY, REOPEN_FIRST_DELAY * 2 ** max(0, attempt - 1)))


async def supervise_tunnel(
    host: str,
    port: int,
    settings: TunnelSettings,
    report: Callable[[TunnelEvent], None],
    *,
    task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a public address for `host:port` open until cancelled, reporting what happens.

    Each attempt is bounded by `OPEN_DEADLINE`. A lost or failed tunnel is reopened with
    exponential backoff, up to `MAX_REOPEN_ATTEMPTS` in a row; an error only the user can fix
    (`TunnelError.permanent`) is reported once and ends supervision. `task_status.started()`
    gets the first public URL, or None if the first attempt failed. `report` is called from
    this task and must not block or raise. Ends with `TunnelClosed`, the agent gone.
    """
    on_log = _reporter_from_threads(report) if settings.verbose else None
    tunnel: Tunnel | None = None
    failures = 0
    started = False
    try:
        while True:
            report(TunnelOpening(attempt=failures))
            try:
                with trio.fail_after(OPEN_DEADLINE):
                    tunnel = await open_tunnel(host, port, settings, on_log=on_log)
            except (TunnelError, trio.TooSlowError) as exc:
                error = classify(exc, authtoken=settings.authtoken)
            else:
                report(TunnelOpened(tunnel.public_url, tunnel.public_host, tunnel.public_port))
                if not started:
                    task_status.started(tunnel.public_url)
                    started = True
                opened_at = trio.current_time()
                status = await tunnel.wait_agent_exit()
                tunnel.close_nowait()
                tunnel = None
                if trio.current_time() - opened_at >= STABLE_AFTER:
                    failures = 0
                error = TunnelError("agent_died", f"the ngrok agent exited with status {status}")
            report(TunnelFailed(error))
            if not started:
                task_status.started(None)
                started = True
            failures += 1
            if error.permanent or failures > MAX_REOPEN_ATTEMPTS:
                return
            delay = reopen_delay(failures)
            report(TunnelReopening(attempt=failures, delay=delay))
            await trio.sleep(delay)
    finally:
        if tunnel is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_DEADLINE):
                await tunnel.close()
            tunnel.close_nowait()
        report(TunnelClosed())


def _reporter_from_threads(report: Callable[[TunnelEvent], None]) -> Callable[[str], None]:
    # pyngrok calls log callbacks from its own threads; hand each line to the trio thread.
    token = trio.lowlevel.current_trio_token()

    def forward(line: str) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(report, TunnelLog(line))

    return forward


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
