"""`multichat status`, `down`, and `kick`, `ban` and the other moderation commands: talk to
the running room over its own port.

They find the room through its state file and prove themselves with the control token; the
token is the proof, not the source address, since tunnelled strangers arrive from 127.0.0.1
too. A moderation command acts as the host (`host` in the room's notices) and sends its words
as typed; the room reads them with the one command grammar (`protocol.commands`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

import trio

from ..protocol.commands import format_duration
from ..protocol.connection import ClientConnection
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import (
    BanList,
    ConnectionClosed,
    Control,
    Error,
    Invite,
    InviteIssued,
    InviteList,
    NeedData,
    Notice,
    Status,
)
from ..protocol.textmode import describe_ban
from ..server.invites import DEFAULT_EXPIRY_SECONDS
from . import invite_links
from .statefile import RoomState, pid_alive, remove_state, running_rooms, state_path

# A room answers at once; a second covers a busy one without making `status` hang.
ANSWER_SECONDS = 5.0
# The room's own shutdown grace is 5 s; this leaves room for it and for the tunnel to close.
DOWN_WAIT_SECONDS = 15.0
# After SIGTERM, a process that still has not exited is stuck.
TERM_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05

EXIT_UP = 0
EXIT_NOT_UP = 3

# The host's moderation commands, as `multichat COMMAND` and on the console.
MODERATION_COMMANDS = (
    "kick",
    "ban",
    "unban",
    "mute",
    "unmute",
    "lock",
    "unlock",
    "op",
    "deop",
    "bans",
)

Answer = Status | Notice | BanList
# What `invite` and `invites` answer: kept apart, so moderation's callers never see them.
Reply = Answer | InviteIssued | InviteList


class ControlError(Exception):
    """The room could not be reached or refused the command; the message says so."""


class Refused(ControlError):
    """The room answered the command with an error; the message is the room's own."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.code = error.code


async def send_control(state: RoomState, command: str, reason: str = "") -> Status:
    """Send one control command to the room and return its status answer."""
    try:
        answer = await _exchange(state, Control(state.token, command, reason))
    except Refused as exc:
        raise ControlError(f"the room refused: {exc}") from None
    if not isinstance(answer, Status):
        raise ControlError(f"the room answered {command} with something else")
    return answer


async def _exchange(state: RoomState, control: Control) -> Answer:
    """Send `control` to the room and return its answer; an error answer raises Refused."""
    reply = await _reply(state, control)
    if isinstance(reply, InviteIssued | InviteList):
        raise ControlError(f"the room answered {control.command} with an invite")
    return reply


async def _reply(state: RoomState, control: Control) -> Reply:
    """Send `control` to the room and return any answer; an error answer raises Refused."""
    conn = ClientConnection()
    try:
        stream = await trio.open_tcp_stream(state.control_host(), state.port)
    except OSError as exc:
        raise ControlError(
            f"the room on port {state.port} does not answer: {exc.strerror}"
        ) from None
    async with stream:
        try:
            await stream.send_all(conn.send(control))
        except trio.BrokenResourceError:
            raise ControlError("the room closed the connection without answering") from None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                raise ControlError(f"port {state.port} is not a multichat room") from None
            if isinstance(event, NeedData):
                try:
                    conn.receive_data(await stream.receive_some(65536))
                except trio.BrokenResourceError:
                    conn.receive_data(b"")
                continue
            if isinstance(event, Status | Notice | BanList | InviteIssued | InviteList):
                return event
            if isinstance(event, Error):
                raise Refused(event)
            if isinstance(event, ConnectionClosed):
                raise ControlError("the room closed the connection without answering")


def pick_room(port: int | None) -> RoomState | None:
    """The running room on `port`, or the only one running; ControlError if it is ambiguous."""
    rooms = running_rooms()
    if port is not None:
        rooms = [r for r in rooms if r.port == port]
    if len(rooms) > 1:
        ports = ", ".join(str(r.port) for r in rooms)
        raise ControlError(f"several rooms are up (ports {ports}); choose one with --port")
    return rooms[0] if rooms else None


@dataclass(frozen=True)
class StatusReport:
    state: RoomState
    status: Status


async def status(port: int | None) -> StatusReport | None:
    """The running room's status, or None when no room is up here."""
    state = pick_room(port)
    if state is None:
        return None
    with trio.move_on_after(ANSWER_SECONDS):
        try:
            return StatusReport(state, await send_control(state, "status"))
        except ControlError:
            return None
    return None


async def moderate(port: int | None, command: str, words: list[str]) -> Notice | BanList:
    """Run a moderation command (`kick`, `ban`, ...) in the running room, as the host.

    `words` are the command's words as typed: the target, then `--for DURATION` and a reason.
    Raises Refused with the room's own message (`nobody called 'zed' is in the room`), or
    ControlError when there is no room to ask.
    """
    state = pick_room(port)
    if state is None:
        raise ControlError("no room is up here")
    with trio.move_on_after(ANSWER_SECONDS):
        answer = await _exchange(state, Control(state.token, command, "", tuple(words)))
        if isinstance(answer, Status):  # a room from before moderation took it for `status`
            raise ControlError(f"the room on port {state.port} does not know {command!r}")
        return answer
    raise ControlError(f"the room on port {state.port} did not answer in {ANSWER_SECONDS:.0f} s")


def format_answer(answer: Notice | BanList) -> str:
    """A moderation command's answer as the host reads it: one line, or one line per ban."""
    if isinstance(answer, Notice):
        return answer.text
    if not answer.bans:
        return "No bans."
    return "\n".join(
        describe_ban(ban.address, ban.name, ban.until, ban.reason, ban.by) for ban in answer.bans
    )


def format_status(report: StatusReport) -> str:
    state, st = report.state, report.status
    minutes, seconds = divmod(int(st.uptime), 60)
    hours, minutes = divmod(minutes, 60)
    lines = [
        f"Room {st.room!r} is up (pid {state.pid}, port {state.port}, multichat {st.version}).",
        f"Uptime: {hours}h {minutes:02d}m {seconds:02d}s",
        f"Members online ({len(st.members)}): {', '.join(st.members) or '-'}",
    ]
    if len(st.rooms) > 1:
        lines.append(f"Rooms ({len(st.rooms)}):")
        for room in st.rooms:
            topic = f"; topic: {room.topic}" if room.topic else ""
            names = f": {', '.join(room.names)}" if room.names else ""
            lines.append(f"  {room.name} ({room.members} online){names}{topic}")
    elif st.rooms and st.rooms[0].topic:
        lines.append(f"Topic: {st.rooms[0].topic}")
    if state.https or not state.tcp:
        lines.append(f"Public: {state.https or '(no tunnel)'}")
    if state.tcp:
        lines.append(f"TCP:    {state.tcp}")
    for address in state.lan:
        lines.append(f"LAN:    {f'[{address}]' if ':' in address else address}:{state.port}")
    return "\n".join(lines)


async def _wait_exit(pid: int, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        # Another process's exit has no event to wait on: polling is the portable way.
        while pid_alive(pid):  # noqa: ASYNC110
            await trio.sleep(POLL_SECONDS)
        return True
    return False


async def down(port: int | None, reason: str, *, force: bool) -> str:
    """Close the running room gracefully; returns what happened, in one line."""
    state = pick_room(port)
    if state is None:
        raise ControlError("no room is up here (nothing to stop)")
    if not state.pid_visible():
        return await _down_elsewhere(state, reason, force=force)
    if force:
        _signal(state.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        await _wait_exit(state.pid, TERM_WAIT_SECONDS)
        remove_state(state.port, state.pid)
        return f"Killed the room on port {state.port} (pid {state.pid}); members were not told."
    try:
        with trio.fail_after(ANSWER_SECONDS):
            await send_control(state, "shutdown", reason)
    except (ControlError, trio.TooSlowError):
        pass  # not answering: SIGTERM below takes the same graceful path
    started = time.monotonic()
    if await _wait_exit(state.pid, DOWN_WAIT_SECONDS):
        return f"The room on port {state.port} is closed ({time.monotonic() - started:.1f} s)."
    _signal(state.pid, signal.SIGTERM)
    if await _wait_exit(state.pid, TERM_WAIT_SECONDS):
        return f"The room on port {state.port} is closed (after SIGTERM)."
    raise ControlError(
        f"the room (pid {state.pid}) does not exit; use `multichat down --force` to kill it"
    )


async def _down_elsewhere(state: RoomState, reason: str, *, force: bool) -> str:
    """Close a room whose process we cannot see or signal (another container): ask it, then
    wait for it to remove its state file, which it does last."""
    if force:
        raise ControlError(
            "the room runs in another container; stop that container to kill it "
            "(`docker compose kill server`)"
        )
    with trio.move_on_after(ANSWER_SECONDS):
        await send_control(state, "shutdown", reason)
    started = time.monotonic()
    path = state_path(state.port)
    with trio.move_on_after(DOWN_WAIT_SECONDS):
        # The room's exit has no event to wait on from here: polling is the portable way.
        while path.exists():  # noqa: ASYNC110
            await trio.sleep(POLL_SECONDS)
        return f"The room on port {state.port} is closed ({time.monotonic() - started:.1f} s)."
    raise ControlError(f"the room on port {state.port} did not close; stop its container")


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        print(f"multichat: not allowed to signal pid {pid}", file=sys.stderr)


# -- personal invites: `multichat invite`, `invites` and `revoke` (docs/invites.md) --


async def _ask_invites(port: int | None, command: str, args: tuple[str, ...]) -> Reply:
    state = pick_room(port)
    if state is None:
        raise ControlError("no room is up here")
    with trio.move_on_after(ANSWER_SECONDS):
        reply = await _reply(state, Control(state.token, command, "", args))
        if isinstance(reply, Status):  # a room from before invites took it for `status`
            raise ControlError(f"the room on port {state.port} does not know {command!r}")
        return reply
    raise ControlError(f"the room on port {state.port} did not answer in {ANSWER_SECONDS:.0f} s")


async def issue_invite(
    port: int | None, *, name: str = "", uses: int = 1, seconds: float = DEFAULT_EXPIRY_SECONDS
) -> tuple[list[invite_links.InviteText], InviteIssued]:
    """A new personal invite from the running room: the strings to give, and the invite.

    Raises Refused with the room's own message (`an invite is good for 1 to 1000 uses`), or
    ControlError when there is no room to ask.
    """
    state = pick_room(port)
    if state is None:
        raise ControlError("no room is up here")
    if not invite_links.room_invites(state):
        raise ControlError(
            f"the room on port {state.port} has no invite to give (it runs without TLS: "
            "restart it with this multichat)"
        )
    args = (f"uses={uses}", f"seconds={seconds!r}", *((f"name={name}",) if name else ()))
    reply = await _ask_invites(state.port, "invite", args)
    if not isinstance(reply, InviteIssued):
        raise ControlError(f"the room on port {state.port} answered invite with something else")
    return invite_links.room_invites(state, reply.token), reply


async def list_invites(port: int | None) -> InviteList:
    """The running room's live personal invites (never their tokens: it has only digests)."""
    reply = await _ask_invites(port, "invites", ())
    if not isinstance(reply, InviteList):
        raise ControlError("the room answered invites with something else")
    return reply


async def revoke_invite(port: int | None, id: str) -> Notice:
    """End the personal invite `id` at once; raises Refused if the room has no such invite."""
    reply = await _ask_invites(port, "revoke", (id,))
    if not isinstance(reply, Notice):
        raise ControlError("the room answered revoke with something else")
    return reply


def describe_invite(invite: Invite, now: float) -> str:
    """Who an invite is for, how many uses it has left, and until when, in words."""
    who = f"for {invite.name} only" if invite.name else "for anyone"
    uses = "1 use" if invite.uses == 1 else f"{invite.uses} uses"
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(invite.expires))
    left = f"in {remaining(invite.expires - now)}" if invite.expires > now else "expired"
    return f"{who}, {uses} left, until {until} ({left})"


def remaining(seconds: float) -> str:
    """`1h 59m` rather than `1h`: the two largest units, to the minute past an hour."""
    whole = round(seconds)
    if whole < 3600:
        return format_duration(whole)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def format_invites(listed: InviteList, now: float) -> str:
    """`multichat invites`: one line per live invite, by id."""
    if not listed.invites:
        return "No personal invites. Make one with `multichat invite`."
    return "\n".join(f"{invite.id}  {describe_invite(invite, now)}" for invite in listed.invites)
