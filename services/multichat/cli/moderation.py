"""The host's commands for a running room: moderation (`kick`, `ban`, ...) and personal
invites (`invite`, `invites`, `revoke`)."""

from __future__ import annotations

import sys
from functools import partial
from typing import Annotated

import trio
import typer

from ..hosting import control
from .app import STATE_ENV, app, environment, fail
from .options import DurationOpt, InRoomOpt, NameArg, NoQrOpt, ReasonArg, StatePortOpt, TargetArg


def _moderate(command: str, words: list[str], port: int | None, room: str | None = None) -> None:
    """Send one moderation command to the running room as the host; print its answer."""
    from ..protocol.commands import CommandError, moderation

    try:
        moderation(command, words)  # a bad --for is told here, before any connection
    except CommandError as exc:
        raise fail(str(exc).replace("usage: /", "usage: multichat "), 2) from None
    if room is not None:
        words = [*words, "--room", room]
    try:
        answer = trio.run(control.moderate, port, command, words)
    except control.ControlError as exc:
        raise fail(str(exc)) from None
    typer.echo(control.format_answer(answer))


def _for(duration: str | None) -> list[str]:
    return ["--for", duration] if duration is not None else []


@app.command(epilog=environment(STATE_ENV))
def kick(
    name: NameArg, reason: ReasonArg = None, port: StatePortOpt = None, room: InRoomOpt = None
) -> None:
    """Remove NAME from the running room; they may come back (ban keeps them out)."""
    _moderate("kick", [name, *(reason or [])], port, room)


@app.command(epilog=environment(STATE_ENV))
def ban(
    target: TargetArg,
    reason: ReasonArg = None,
    duration: DurationOpt = None,
    port: StatePortOpt = None,
    room: InRoomOpt = None,
) -> None:
    """Remove a member and keep their address out (or ban an address): checked before the
    password, behind the tunnel too."""
    _moderate("ban", [target, *_for(duration), *(reason or [])], port, room)


@app.command(epilog=environment(STATE_ENV))
def unban(target: TargetArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Lift a ban, by the name it was made by or by address (`multichat bans` lists them)."""
    _moderate("unban", [target], port, room)


@app.command(epilog=environment(STATE_ENV))
def mute(
    name: NameArg, duration: DurationOpt = None, port: StatePortOpt = None, room: InRoomOpt = None
) -> None:
    """NAME may read but not say anything, for a while or until unmuted."""
    _moderate("mute", [name, *_for(duration)], port, room)


@app.command(epilog=environment(STATE_ENV))
def unmute(name: NameArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Let NAME talk again."""
    _moderate("unmute", [name], port, room)


@app.command(epilog=environment(STATE_ENV))
def lock(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Refuse newcomers (members in the room stay)."""
    _moderate("lock", [], port, room)


@app.command(epilog=environment(STATE_ENV))
def unlock(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Accept newcomers again."""
    _moderate("unlock", [], port, room)


@app.command(epilog=environment(STATE_ENV))
def op(name: NameArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Make NAME an operator of the room (until they leave or the room closes)."""
    _moderate("op", [name], port, room)


@app.command(epilog=environment(STATE_ENV))
def deop(name: NameArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Take operator rights from NAME."""
    _moderate("deop", [name], port, room)


@app.command(epilog=environment(STATE_ENV))
def bans(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """List the room's bans: who, until when, by whom, why."""
    _moderate("bans", [], port, room)


@app.command(epilog=environment(STATE_ENV))
def invite(
    name: Annotated[
        str | None,
        typer.Option("--name", help="Only NAME may use it; the name is kept for them meanwhile."),
    ] = None,
    uses: Annotated[int, typer.Option("--uses", help="How many logins it is good for.")] = 1,
    expires: Annotated[
        str,
        typer.Option(
            "--expires", help="How long it works: 30m, 2h, 1d, 1w, 1h30m.", metavar="DURATION"
        ),
    ] = "1d",
    port: StatePortOpt = None,
    no_qr: NoQrOpt = False,
) -> None:
    """A personal invite: one string that logs a friend in without the room password.

    Prints it for the public link, the TCP tunnel and the LAN, and a QR code of the one a
    phone would use. The token is shown only now: the room keeps only its digest.
    """
    import time

    from ..hosting import invite_links
    from ..protocol.commands import CommandError, parse_duration
    from ..server.invites import MAX_USES

    if not 1 <= uses <= MAX_USES:
        raise fail(f"--uses must be between 1 and {MAX_USES}", 2)
    try:
        seconds = parse_duration(expires)
    except CommandError as exc:
        raise fail(f"--expires: {exc}", 2) from None
    try:
        strings, issued = trio.run(
            partial(control.issue_invite, port, name=name or "", uses=uses, seconds=seconds)
        )
    except control.ControlError as exc:
        raise fail(str(exc)) from None
    who = issued.invite.name or "a friend"
    typer.echo(f"Invite {issued.invite.id}: {control.describe_invite(issued.invite, time.time())}.")
    typer.echo(f"Give {who} one of these (shown only now; `multichat revoke` ends it):")
    for line in invite_links.invite_lines(strings):
        typer.echo(line)
    phone = invite_links.for_a_phone(strings)
    if not no_qr and phone is not None:
        typer.echo(f"\nOr let them scan it ({phone.where}):")
        for line in invite_links.qr_lines(phone.text, sys.stdout.encoding):
            typer.echo(f"  {line}")


@app.command(epilog=environment(STATE_ENV))
def invites(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """List the running room's personal invites: id, for whom, uses left, until when."""
    import time

    try:
        listed = trio.run(control.list_invites, port)
    except control.ControlError as exc:
        raise fail(str(exc)) from None
    typer.echo(control.format_invites(listed, time.time()))


@app.command(epilog=environment(STATE_ENV))
def revoke(
    id: Annotated[str, typer.Argument(help="The invite's id, as `multichat invites` lists it.")],
    port: StatePortOpt = None,
) -> None:
    """End a personal invite at once (whoever already joined with it stays)."""
    try:
        typer.echo(trio.run(control.revoke_invite, port, id).text)
    except control.ControlError as exc:
        raise fail(str(exc)) from None
