"""What every connection of one server shares, and the checks it makes of what they ask.

A session asks; this decides whether a password or a control token is right, counting wrong
ones per source and in all, and what to answer. The rooms (rooms.py) are shared too: each
keeps its own members, moderation and history. No I/O.
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
from ..protocol.events import BanList, Error, InviteIssued, InviteList, Moderate, Notice, Status
from ..protocol.names import check_name, name_key
from .auth import Gate, Secret, Throttle
from .invites import InviteBook, InviteError
from .limits import Limits
from .moderation import HOST
from .readiness import Readiness
from .room import Refused
from .rooms import HostedRoom, Rooms

log = logging.getLogger("multichat.server")


class OpenConnection(Protocol):
    """What the server asks of every open connection (a `Session`), wherever it came from."""

    def shutdown_nowait(self, reason: str) -> None: ...

    def check_idle_nowait(self, now: float) -> None: ...


@dataclass
class ServerContext:
    """What every connection of one server shares."""

    rooms: Rooms
    password: Secret
    limits: Limits
    version: str
    control_token: Secret | None = None
    tls: ssl.SSLContext | None = None  # the server's certificate, for clients that open with TLS
    request_shutdown: Callable[[str], None] = lambda reason: None
    failures: Throttle = field(init=False)
    gate: Gate = field(init=False)
    invites: InviteBook = field(init=False)
    sessions: set[OpenConnection] = field(init=False, default_factory=set)
    # Where members wait for their input (its task runs in the server's).
    readiness: Readiness = field(init=False, default_factory=Readiness)

    def __post_init__(self) -> None:
        lim = self.limits
        self.failures = Throttle(
            lim.failed_passwords_per_minute, lim.failed_passwords_global_per_minute
        )
        self.gate = Gate(
            lim.connections_per_source, lim.unauthenticated_per_source, lim.unauthenticated_total
        )
        self.invites = InviteBook(clock=self.rooms.default.room.now)
        # A personal invite keeps its name in every room: names are the server's.
        self.rooms.reserved = lambda key: self.invites.reserved(key, name_key)

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

    def check_invite(self, source: str, token: str, name: str, now: float) -> Error | None:
        """None if `token` lets `name` in (one use spent); else the error to answer with.

        A bad invite counts as a wrong password: one throttle for both.
        """
        if not self.failures.allowed(source, now):
            wait = math.ceil(self.failures.retry_after(source, now))
            return Error("throttled", f"too many wrong passwords or invites; try again in {wait} s")
        try:
            key = name_key(check_name(name))
        except ProtocolError as exc:
            return Error("bad_name", str(exc))
        try:
            invite = self.invites.redeem(token, key, name_key)
        except InviteError as exc:
            self.failures.record(source, now)
            log.warning("bad invite from %s", source)
            return Error("bad_invite", str(exc))
        log.info("invite %s used by %s from %s", invite.id, name, source)
        return None

    def control(
        self,
        source: str,
        token: str,
        command: str,
        reason: str,
        now: float,
        args: tuple[str, ...] = (),
    ) -> Status | Notice | BanList | InviteIssued | InviteList | Error:
        """The answer to a control command; a right `shutdown` also starts closing the room.

        Moderation commands (`kick NAME REASON...`) come with their words in `args` and act as
        the host, in the room `--room NAME` names, else the room of the member they name,
        else the default room.
        """
        if self.control_token is None or not self.failures.allowed(source, now):
            return Error("bad_token", "control commands are not available")
        if not self.control_token.matches(token):
            self.failures.record(source, now)
            return Error("bad_token", "wrong control token")
        if command in ("invite", "invites", "revoke"):
            return self._invite_command(command, args)
        if command not in ("status", "shutdown"):
            try:
                words = list(args)
                room = commands.take_room(words)
                request = commands.moderation(command, words)
                hosted = self.room_for(room, request)
            except ProtocolError as exc:
                return Error(exc.code, str(exc))
            except Refused as exc:
                return Error(exc.code, exc.message)
            return hosted.moderation.command(HOST, request, by_host=True)
        default = self.rooms.default.room
        rooms = tuple(hosted.info(names=True) for hosted in self.rooms)
        status = Status(default.name, self.rooms.names(), default.uptime(), self.version, rooms)
        if command == "shutdown":
            log.info("shutdown requested by the control token: %s", reason or "(no reason)")
            self.request_shutdown(reason or "the host closed the room")
        return status

    def room_for(self, room: str | None, request: Moderate) -> HostedRoom:
        """Where a host's moderation command acts: the room it names, else the room of the
        member it names (names are the server's), else the default room. Raises Refused."""
        if room is not None:
            return self.rooms.find(room)
        if request.target:
            found = self.rooms.where(request.target)
            if found is not None:
                return found
        return self.rooms.default

    def _invite_command(
        self, command: str, args: tuple[str, ...]
    ) -> InviteIssued | InviteList | Notice | Error:
        """`invite name=N uses=U seconds=S`, `invites`, `revoke ID` (the CLI sends these)."""
        try:
            if command == "invites":
                return InviteList(tuple(self.invites.live()))
            if command == "revoke":
                if len(args) != 1:
                    return Error("bad_command", "usage: revoke ID")
                gone = self.invites.revoke(args[0])
                return Notice(f"revoked invite {gone.id}", self.rooms.default.room.now())
            options = dict(arg.partition("=")[::2] for arg in args)
            name = options.pop("name", "")
            if name:
                name = check_name(name)
            uses = int(options.pop("uses", "1"))
            seconds = float(options.pop("seconds", "86400"))
            if options:
                return Error("bad_command", f"unknown invite options: {', '.join(options)}")
            invite, token = self.invites.issue(name, uses, seconds)
        except (InviteError, ProtocolError) as exc:
            return Error("bad_command", str(exc))
        except ValueError:
            return Error("bad_command", "uses and seconds must be numbers")
        log.info("host made invite %s (%s, %d uses)", invite.id, invite.name or "anyone", uses)
        return InviteIssued(invite, token)
