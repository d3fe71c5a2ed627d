"""What every connection of one server shares, and the checks it makes of what they ask.

A session asks; this decides whether a password or a control token is right, counting wrong
ones per source and in all, and what to answer. No I/O.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..protocol import commands
from ..protocol.errors import ProtocolError
from ..protocol.events import BanList, Error, Notice, Status
from .auth import Gate, Secret, Throttle
from .fanout import Fanout
from .limits import Limits
from .moderation import HOST, Moderation
from .room import Room

log = logging.getLogger("multichat.server")


class OpenConnection(Protocol):
    """What the server asks of every open connection (a `Session`), wherever it came from."""

    def shutdown_nowait(self, reason: str) -> None: ...

    def check_idle_nowait(self, now: float) -> None: ...


@dataclass
class ServerContext:
    """What every connection of one server shares."""

    room: Room
    password: Secret
    limits: Limits
    version: str
    control_token: Secret | None = None
    tls: ssl.SSLContext | None = None  # the room's certificate, for clients that open with TLS
    request_shutdown: Callable[[str], None] = lambda reason: None
    failures: Throttle = field(init=False)
    gate: Gate = field(init=False)
    fanout: Fanout = field(init=False)
    moderation: Moderation = field(init=False)
    sessions: set[OpenConnection] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        lim = self.limits
        self.failures = Throttle(
            lim.failed_passwords_per_minute, lim.failed_passwords_global_per_minute
        )
        self.gate = Gate(
            lim.connections_per_source, lim.unauthenticated_per_source, lim.unauthenticated_total
        )
        self.fanout = Fanout(self.room)
        self.moderation = Moderation(self.room, clock=self.room.now, monotonic=self.room.monotonic)

    def check_password(self, source: str, attempt: str, now: float) -> Error | None:
        """None if `attempt` is the room's password; otherwise the error to answer with."""
        if not self.failures.allowed(source, now):
            wait = math.ceil(self.failures.retry_after(source, now))
            log.warning("throttled a login from %s", source)
            return Error("throttled", f"too many wrong passwords; try again in {wait} s")
        if self.password.matches(attempt):
            return None
        self.failures.record(source, now)
        log.warning("wrong password from %s", source)
        return Error("bad_password", "wrong password")

    def control(
        self,
        source: str,
        token: str,
        command: str,
        reason: str,
        now: float,
        args: tuple[str, ...] = (),
    ) -> Status | Notice | BanList | Error:
        """The answer to a control command; a right `shutdown` also starts closing the room.

        Moderation commands (`kick NAME REASON...`) come with their words in `args` and act as
        the host.
        """
        if self.control_token is None or not self.failures.allowed(source, now):
            return Error("bad_token", "control commands are not available")
        if not self.control_token.matches(token):
            self.failures.record(source, now)
            return Error("bad_token", "wrong control token")
        if command not in ("status", "shutdown"):
            try:
                request = commands.moderation(command, list(args))
            except ProtocolError as exc:
                return Error(exc.code, str(exc))
            return self.moderation.command(HOST, request, by_host=True)
        room = self.room
        status = Status(room.name, room.names(), room.uptime(), self.version)
        if command == "shutdown":
            log.info("shutdown requested by the control token: %s", reason or "(no reason)")
            self.request_shutdown(reason or "the host closed the room")
        return status
