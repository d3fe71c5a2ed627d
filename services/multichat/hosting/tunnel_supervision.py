"""The room's tunnel kept open for as long as the room runs: opened, watched, and reopened with
backoff when the agent dies, each step reported as an event the launcher shows.

An error only the user can fix (`TunnelError.permanent`) is reported once and ends the
supervision; anything else is tried again, up to MAX_REOPEN_ATTEMPTS in a row. tunnel.py opens
and closes one tunnel; this module decides when.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import trio

from .ngrok_errors import TunnelError, classify
from .tunnel import CLOSE_DEADLINE, OPEN_DEADLINE, Tunnel, TunnelSettings, open_tunnel

REOPEN_FIRST_DELAY = 1.0  # a crashed agent usually starts again at once; the pause stops a hot loop
REOPEN_MAX_DELAY = 60.0  # never leave the room unreachable for longer than a minute between tries
MAX_REOPEN_ATTEMPTS = 8  # 1+2+4+...+60+60 s: about three minutes of trying, then we give up
STABLE_AFTER = 60.0  # a tunnel that stayed up this long was healthy: start backing off afresh


@dataclass(frozen=True, slots=True)
class TunnelOpening:
    """An attempt to open the tunnel begins; `attempt` is 0 the first time."""

    attempt: int = 0


@dataclass(frozen=True, slots=True)
class TunnelOpened:
    """The room is public at `https` and, when the account allows it, `tcp` (new addresses
    after every reopen).

    `tcp_error` says why there is no TCP address, once: a refusal only the user can fix
    (ERR_NGROK_8013, no card on file) is not asked again, so later reopens carry None.
    """

    https: str  # "https://a1b2-203-0-113-7.ngrok-free.app"
    tcp: str | None = None  # "tcp://0.tcp.ngrok.io:12345"
    tcp_error: TunnelError | None = None

    def tcp_address(self) -> tuple[str, int] | None:
        """The TCP endpoint as (host, port), for `nc` and for tests."""
        if self.tcp is None:
            return None
        parts = urlsplit(self.tcp)
        assert parts.hostname is not None and parts.port is not None  # checked by Tunnel
        return parts.hostname, parts.port


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
    task_status: trio.TaskStatus[TunnelOpened | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep public addresses for `host:port` open until cancelled, reporting what happens.

    Each attempt (agent, HTTPS and TCP endpoints) is bounded by `OPEN_DEADLINE`. A lost or
    failed tunnel is reopened with exponential backoff, up to `MAX_REOPEN_ATTEMPTS` in a row; an
    error only the user can fix (`TunnelError.permanent`) is reported once and ends
    supervision. A refused TCP endpoint is no failure: the tunnel carries on with HTTPS, and a
    refusal only the user can fix stops the asking. `task_status.started()` gets the first
    `TunnelOpened`, or None if the first attempt failed. `report` is called from this task and
    must not block or raise. Ends with `TunnelClosed`, the agent gone.
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
                opened = TunnelOpened(tunnel.https_url, tunnel.tcp_url, tunnel.tcp_error)
                if tunnel.tcp_error is not None and tunnel.tcp_error.permanent:
                    # Said once; every reopen would only be refused the same way.
                    settings = replace(settings, tcp=False)
                report(opened)
                if not started:
                    task_status.started(opened)
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
