"""The `multichat` command: one typer app, one small function per subcommand.

Each command parses its options and hands over to the module that does the work; errors a
person can fix are printed as one line with no traceback, and a non-zero exit.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import trio
import typer

from . import __version__
from .client.address import AddressError, parse_address
from .hosting import control, launcher
from .hosting.process import (
    HostError,
    freeze_startup_objects,
    hand_the_gil_over_quickly,
    host_room,
    password_from,
    setup_logging,
)
from .hosting.statefile import RoomState
from .hosting.tunnel import TunnelSettings
from .protocol.events import DEFAULT_PORT
from .server.auth import new_token
from .server.backplane import NODE_TIMEOUT_SECONDS, BackplaneAddress, BackplaneError
from .server.backplane import parse_address as parse_backplane
from .server.limits import Limits, LimitsError, load_limits, load_node_timeout, load_open_rooms
from .server.listeners import ChatServer

if TYPE_CHECKING:
    from .hosting.roomdata import RoomData

app = typer.Typer(
    name="multichat",
    help="Host a chat room for friends, on your LAN or across the internet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as one line on stderr; raise the returned exception to exit."""
    typer.echo(f"multichat: {message}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"multichat {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Host a chat room for friends, on your LAN or across the internet."""


HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (default: every interface).")
]
PortOpt = Annotated[
    int, typer.Option("--port", "-p", help="TCP port to listen on.", min=0, max=65535)
]
RoomOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--room",
        help="A room's name, shown to everyone (default: multichat). Give it again for more "
        "rooms: the first is where friends land, and they move with /join NAME.",
        show_default=False,
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option("--password-file", help="Read the room password from the first line of a file."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="A TOML file with a \\[limits] table (see docs/limits.md)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")]
BackplaneOpt = Annotated[
    str | None,
    typer.Option(
        "--backplane",
        envvar="MULTICHAT_BACKPLANE",
        help="redis://HOST:PORT\\[/DB] (rediss:// for TLS): serve the same rooms as every other "
        "server started with this Redis and the same password (docs/backplane.md). History and "
        "resume then come from Redis, not the data directory.",
        show_default=False,
    ),
]

# Variables read without an option of their own; typer shows `[env var: ...]` for the others.
_PASSWORD_ENV = "MULTICHAT_PASSWORD (the room password, when no option or file gives it)"
_STATE_ENV = "MULTICHAT_STATE_DIR (where running rooms are recorded, for status and down)"
_NGROK_ENV = "NGROK_AUTHTOKEN (your ngrok authtoken; else the one in ngrok's config file)"


def environment(*lines: str) -> str:
    """An epilog listing the environment variables a command reads."""
    return "Environment: " + "; ".join(lines) + "."


def load_config(config: Path | None) -> Limits:
    try:
        return load_limits(config) if config is not None else Limits()
    except LimitsError as exc:
        raise fail(str(exc)) from None


def room_names(rooms: list[str] | None, limits: Limits) -> list[str]:
    """The rooms `--room` names (the first is the default), checked; or exit."""
    from .hosting.roomdata import check_rooms

    try:
        names = check_rooms(rooms or ["multichat"])
    except HostError as exc:
        raise fail(str(exc), 2) from None
    if len(names) > limits.max_rooms:
        raise fail(f"{len(names)} rooms, but max_rooms is {limits.max_rooms} (see --config)", 2)
    return names


@dataclass(frozen=True)
class BackplaneSettings:
    address: BackplaneAddress
    node_timeout: float


def backplane_setting(url: str | None, config: Path | None) -> BackplaneSettings | None:
    """`--backplane`, parsed, with the config file's `[backplane] node_timeout`; or exit."""
    if not url:
        return None
    try:
        address = parse_backplane(url)
        timeout = NODE_TIMEOUT_SECONDS
        if config is not None:
            timeout = load_node_timeout(config, NODE_TIMEOUT_SECONDS)
    except (BackplaneError, LimitsError) as exc:
        raise fail(str(exc), 2) from None
    return BackplaneSettings(address, timeout)


def open_rooms_setting(config: Path | None) -> bool:
    """Whether members may make rooms (`open_rooms = true` in the config file)."""
    try:
        return load_open_rooms(config) if config is not None else False
    except LimitsError as exc:
        raise fail(str(exc)) from None


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the room keeps what outlives it: its history, bans, TLS certificate and "
        "personal invites (default: a directory per room name in your user data directory).",
    ),
]
EphemeralOpt = Annotated[
    bool,
    typer.Option(
        "--ephemeral",
        help="Keep nothing on disk: history, bans and personal invites in memory only, a new "
        "certificate (and fingerprint) every start.",
    ),
]
TlsCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        help="Your own TLS certificate (PEM, a chain may follow) instead of the self-signed "
        "one the room makes; needs --tls-key.",
    ),
]
TlsKeyOpt = Annotated[
    Path | None, typer.Option("--tls-key", help="The private key of --tls-cert (PEM).")
]


def open_room(
    rooms: list[str],
    data_dir: Path | None,
    ephemeral: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    config: Path | None,
) -> RoomData:
    """What the room keeps between runs (docs/history.md, docs/invites.md), or exit."""
    # cryptography takes a while to load: only the commands that host a room need it.
    from .hosting.roomdata import RoomData

    try:
        return RoomData.open(
            rooms[0],
            rooms=rooms[1:],
            data_dir=data_dir,
            ephemeral=ephemeral,
            tls_cert=tls_cert,
            tls_key=tls_key,
            config=config,
        )
    except HostError as exc:
        raise fail(str(exc)) from None


def room_server(
    password: str,
    rooms: list[str],
    limits: Limits,
    token: str,
    data: RoomData,
    *,
    open_rooms: bool = False,
    backplane: BackplaneSettings | None = None,
) -> ChatServer:
    """The server of `rooms` (the first is the default), with their histories and certificate;
    invites restored and kept."""
    if data.settings.resume_max != limits.resume_max:
        limits = limits.replace(resume_max=data.settings.resume_max)
    server = ChatServer(
        password,
        room=rooms[0],
        rooms=rooms[1:],
        open_rooms=open_rooms,
        limits=limits,
        control_token=token,
        tls=data.certificate.context,
        history=data.history,
        room_history=data.open_room_history,
        history_settings=data.settings,
        backplane=backplane.address if backplane else None,
        node_timeout=backplane.node_timeout if backplane else NODE_TIMEOUT_SECONDS,
    )
    try:
        data.serve(server)
    except HostError as exc:
        data.close()
        raise fail(str(exc)) from None
    return server


@app.command(epilog=environment(_PASSWORD_ENV, _STATE_ENV))
def serve(
    host: HostOpt = None,
    port: PortOpt = DEFAULT_PORT,
    room: RoomOpt = None,
    password_file: PasswordFileOpt = None,
    config: ConfigOpt = None,
    proxy_port: Annotated[
        int | None,
        typer.Option(
            "--proxy-port",
            help="Also listen on 127.0.0.1:PORT for a tunnel that sends PROXY headers "
            "(v1 or v2), so limits and logs see each friend's real address.",
            min=0,
            max=65535,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    ephemeral: EphemeralOpt = False,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    backplane: BackplaneOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the chat server alone (no tunnel). Type `shutdown` here to close the room.

    Its invites (docs/invites.md) are printed on stderr as it starts, one line each.
    """
    limits = load_config(config)
    rooms = room_names(room, limits)
    open_rooms = open_rooms_setting(config)
    shared = backplane_setting(backplane, config)
    try:
        password = password_from(None, password_file, prompt=True)
    except HostError as exc:
        raise fail(str(exc)) from None
    if password is None:
        raise fail(
            "no room password: pass --password-file FILE, set MULTICHAT_PASSWORD, "
            "or run on a terminal to be asked"
        )
    data = open_room(rooms, data_dir, ephemeral, tls_cert, tls_key, config)
    certificate = data.certificate
    setup_logging(verbose)
    token = new_token()
    server = room_server(
        password, rooms, limits, token, data, open_rooms=open_rooms, backplane=shared
    )

    async def announce(nursery: trio.Nursery, state: RoomState) -> None:
        launcher.announce_invites(state, certificate.where, sys.stderr)

    try:
        freeze_startup_objects()
        hand_the_gil_over_quickly()
        trio.run(
            partial(
                host_room,
                server,
                port,
                host,
                token=token,
                proxy_port=proxy_port,
                on_started=announce,
                fingerprint=certificate.fingerprint,
            )
        )
    except HostError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        data.close()


NgrokPathOpt = Annotated[
    Path | None,
    typer.Option("--ngrok-path", help="An ngrok agent binary you already have (else pyngrok's)."),
]

NgrokConfigOpt = Annotated[
    Path | None,
    typer.Option("--ngrok-config", help="ngrok's config file (default: ngrok's own location)."),
]

NoTcpOpt = Annotated[
    bool,
    typer.Option(
        "--no-tcp",
        help="Only the HTTPS link: do not ask ngrok for a TCP address (ngrok's free plan "
        "opens one only with a card on file).",
    ),
]


@app.command(epilog=environment(_NGROK_ENV, _PASSWORD_ENV, _STATE_ENV))
def up(
    host: HostOpt = None,
    port: PortOpt = DEFAULT_PORT,
    room: RoomOpt = None,
    password: Annotated[
        str | None,
        typer.Option("--password", help="The room password (else one is generated and shown)."),
    ] = None,
    password_file: PasswordFileOpt = None,
    no_tunnel: Annotated[
        bool, typer.Option("--no-tunnel", help="LAN only: do not open the ngrok tunnel.")
    ] = False,
    no_tcp: NoTcpOpt = False,
    ngrok_path: NgrokPathOpt = None,
    ngrok_config: NgrokConfigOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    ephemeral: EphemeralOpt = False,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    backplane: BackplaneOpt = None,
    no_qr: Annotated[
        bool,
        typer.Option("--no-qr", help="Leave the QR code (drawn with text, for a phone) out."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log more, including ngrok's own log lines.")
    ] = False,
) -> None:
    """Host a room: the server plus a public ngrok tunnel; prints how friends join.

    The tunnel gives the room an HTTPS link (for browsers and `multichat connect`) and, when
    your ngrok account allows it (a card on file), a TCP address too. The ngrok authtoken comes
    from NGROK_AUTHTOKEN or your ngrok config file.
    """
    limits = load_config(config)
    rooms = room_names(room, limits)
    open_rooms = open_rooms_setting(config)
    shared = backplane_setting(backplane, config)
    try:
        chosen = password_from(password, password_file, prompt=False)
    except HostError as exc:
        raise fail(str(exc)) from None
    banner = launcher.Banner(rooms[0], qr=not no_qr, rooms=tuple(rooms[1:]))
    if chosen is None:
        chosen = banner.password = launcher.generate_password()
    settings = None
    if not no_tunnel:
        settings = TunnelSettings(
            ngrok_path=str(ngrok_path) if ngrok_path is not None else None,
            config_path=str(ngrok_config) if ngrok_config is not None else None,
            verbose=verbose,
            tcp=not no_tcp,
        )
    data = open_room(rooms, data_dir, ephemeral, tls_cert, tls_key, config)
    certificate = data.certificate
    banner.identity = certificate.where
    setup_logging(verbose)
    token = new_token()
    server = room_server(
        chosen, rooms, limits, token, data, open_rooms=open_rooms, backplane=shared
    )
    freeze_startup_objects()
    hand_the_gil_over_quickly()
    try:
        trio.run(
            partial(
                launcher.run_up,
                server,
                port,
                host,
                token=token,
                banner=banner,
                settings=settings,
                fingerprint=certificate.fingerprint,
            )
        )
    except HostError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        data.close()


@app.command(epilog=environment(_NGROK_ENV))
def tunnel(
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Where the room listens, as HOST:PORT: the HTTPS link forwards HTTP there, "
            "the TCP address bytes. Best the room's --proxy-port listener, which believes "
            "what the tunnel says of each friend's address.",
        ),
    ],
    proxy_protocol: Annotated[
        int,
        typer.Option(
            "--proxy-protocol",
            help="Send a PROXY header (1 or 2) naming each friend's address on the TCP "
            "address's connections; 0 for none. (The HTTPS link always sends X-Forwarded-For.)",
            min=0,
            max=2,
        ),
    ] = 0,
    no_tcp: NoTcpOpt = False,
    ngrok_path: NgrokPathOpt = None,
    ngrok_config: NgrokConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Open the public tunnel alone, to a room served elsewhere (used by docker compose).

    It prints the HTTPS link, and the TCP address when your ngrok account allows one.
    """
    try:
        address = parse_address(target)
    except AddressError as exc:
        raise fail(str(exc)) from None
    settings = TunnelSettings(
        ngrok_path=str(ngrok_path) if ngrok_path is not None else None,
        config_path=str(ngrok_config) if ngrok_config is not None else None,
        verbose=verbose,
        proxy_proto=proxy_protocol or None,
        tcp=not no_tcp,
    )
    setup_logging(verbose)
    try:
        ok = trio.run(launcher.run_tunnel, address.host, address.port, settings)
    except KeyboardInterrupt:
        ok = True
    if not ok:
        raise typer.Exit(1)


StatePortOpt = Annotated[
    int | None, typer.Option("--port", "-p", help="The room's port, when several are up.")
]


@app.command(epilog=environment(_STATE_ENV))
def status(port: StatePortOpt = None) -> None:
    """Is a room up here? Its addresses (public link, TCP, LAN), members and uptime.

    Exit 0 when it is up, 3 when it is not (usable as a health check).
    """
    try:
        report = trio.run(control.status, port)
    except control.ControlError as exc:
        raise fail(str(exc), control.EXIT_NOT_UP) from None
    if report is None:
        typer.echo("No room is up here.")
        raise typer.Exit(control.EXIT_NOT_UP)
    typer.echo(control.format_status(report))


@app.command(epilog=environment(_STATE_ENV))
def down(
    reason: Annotated[
        str, typer.Option("--reason", help="Told to every member.")
    ] = "the host closed the room",
    port: StatePortOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Kill the room at once (members are not told).")
    ] = False,
) -> None:
    """Close the running room gracefully: every member is told why, nothing accepted is lost."""
    try:
        typer.echo(trio.run(partial(control.down, port, reason, force=force)))
    except control.ControlError as exc:
        raise fail(str(exc)) from None


@app.command()
def connect(
    address: Annotated[
        str,
        typer.Argument(
            help=(
                "The room: https://HOST (an ngrok link), http://HOST:PORT on a LAN, "
                "tcp://HOST:PORT, HOST:PORT, HOST or [IPv6]:PORT."
            )
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", envvar="MULTICHAT_NAME", help="Your name in the room."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="MULTICHAT_PASSWORD",
            help="The room password (better: set MULTICHAT_PASSWORD, or type it when asked).",
        ),
    ] = None,
    plain: Annotated[
        bool,
        typer.Option("--plain", help="Plain lines in and out, as when stdin is not a terminal."),
    ] = False,
    no_bell: Annotated[
        bool,
        typer.Option("--no-bell", help="Do not ring the terminal's bell when someone names you."),
    ] = False,
    room: Annotated[
        str | None,
        typer.Option(
            "--room",
            help="Which room of the server to join (default: the one an invite names, else "
            "the server's first); /rooms lists them, /join NAME moves.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join a room: a chat window on a terminal, plain lines otherwise (see docs/client.md).

    Exit codes: 0 left or room closed, 1 cannot connect, 2 usage, 3 refused (password, name,
    banned, locked), 4 connection lost, kicked or banned, or lines not delivered.
    """
    from .client.address import AddressError, parse_address
    from .client.connect import EXIT_USAGE, ConnectExit, run_connect

    try:
        target = parse_address(address)
    except AddressError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    try:
        code = run_connect(target, name, password, plain=plain, bell=not no_bell, room=room)
    except ConnectExit as exc:
        raise fail(str(exc), exc.code) from None
    raise typer.Exit(code)


# -- moderating the running room from another terminal on the host (docs/moderation.md) --

NameArg = Annotated[str, typer.Argument(help="A member's name, as the room shows it.")]
TargetArg = Annotated[str, typer.Argument(help="A member's name, or an address (IPv4 or IPv6).")]
ReasonArg = Annotated[
    list[str] | None,
    typer.Argument(help="Why: told to the member and the room, and logged.", show_default=False),
]
DurationOpt = Annotated[
    str | None,
    typer.Option(
        "--for",
        help="How long: 30s, 10m, 2h, 1d, 1w, 1h30m (default: until lifted or the room closes).",
        metavar="DURATION",
        show_default=False,
    ),
]


InRoomOpt = Annotated[
    str | None,
    typer.Option(
        "--room",
        help="The room (default: the one the member named is in, else the first room).",
        show_default=False,
    ),
]


def _moderate(command: str, words: list[str], port: int | None, room: str | None = None) -> None:
    """Send one moderation command to the running room as the host; print its answer."""
    from .protocol.commands import CommandError, moderation

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


@app.command(epilog=environment(_STATE_ENV))
def kick(
    name: NameArg, reason: ReasonArg = None, port: StatePortOpt = None, room: InRoomOpt = None
) -> None:
    """Remove NAME from the running room; they may come back (ban keeps them out)."""
    _moderate("kick", [name, *(reason or [])], port, room)


@app.command(epilog=environment(_STATE_ENV))
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


@app.command(epilog=environment(_STATE_ENV))
def unban(target: TargetArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Lift a ban, by the name it was made by or by address (`multichat bans` lists them)."""
    _moderate("unban", [target], port, room)


@app.command(epilog=environment(_STATE_ENV))
def mute(
    name: NameArg, duration: DurationOpt = None, port: StatePortOpt = None, room: InRoomOpt = None
) -> None:
    """NAME may read but not say anything, for a while or until unmuted."""
    _moderate("mute", [name, *_for(duration)], port, room)


@app.command(epilog=environment(_STATE_ENV))
def unmute(name: NameArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Let NAME talk again."""
    _moderate("unmute", [name], port, room)


@app.command(epilog=environment(_STATE_ENV))
def lock(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Refuse newcomers (members in the room stay)."""
    _moderate("lock", [], port, room)


@app.command(epilog=environment(_STATE_ENV))
def unlock(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Accept newcomers again."""
    _moderate("unlock", [], port, room)


@app.command(epilog=environment(_STATE_ENV))
def op(name: NameArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Make NAME an operator of the room (until they leave or the room closes)."""
    _moderate("op", [name], port, room)


@app.command(epilog=environment(_STATE_ENV))
def deop(name: NameArg, port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """Take operator rights from NAME."""
    _moderate("deop", [name], port, room)


@app.command(epilog=environment(_STATE_ENV))
def bans(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """List the room's bans: who, until when, by whom, why."""
    _moderate("bans", [], port, room)


# -- personal invites to the running room (docs/invites.md) --

NoQrOpt = Annotated[
    bool, typer.Option("--no-qr", help="Leave out the QR code (drawn with text, for a phone).")
]


@app.command(epilog=environment(_STATE_ENV))
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

    from .hosting import invite_links
    from .protocol.commands import CommandError, parse_duration
    from .server.invites import MAX_USES

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


@app.command(epilog=environment(_STATE_ENV))
def invites(port: StatePortOpt = None, room: InRoomOpt = None) -> None:
    """List the running room's personal invites: id, for whom, uses left, until when."""
    import time

    try:
        listed = trio.run(control.list_invites, port)
    except control.ControlError as exc:
        raise fail(str(exc)) from None
    typer.echo(control.format_invites(listed, time.time()))


@app.command(epilog=environment(_STATE_ENV))
def revoke(
    id: Annotated[str, typer.Argument(help="The invite's id, as `multichat invites` lists it.")],
    port: StatePortOpt = None,
) -> None:
    """End a personal invite at once (whoever already joined with it stays)."""
    try:
        typer.echo(trio.run(control.revoke_invite, port, id).text)
    except control.ControlError as exc:
        raise fail(str(exc)) from None


@app.command()
def export(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="The room's data directory (as given to serve or up)."),
    ] = None,
    room: Annotated[
        str | None,
        typer.Option(
            "--room",
            help="The room's name: its default data directory, or with --data-dir, its own "
            "in that server's.",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="text: one line per entry, to read; json: one object per line."
        ),
    ] = "text",
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only from this local time on: YYYY-MM-DD or 'YYYY-MM-DD HH:MM'."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE (mode 0600), not stdout.")
    ] = None,
    include_private: Annotated[
        bool, typer.Option("--include-private", help="Include private messages, everyone's.")
    ] = False,
) -> None:
    """Print a room's history (see docs/history.md); works while the room runs, too.

    Without --data-dir or --room: the default room's (multichat). Exit 2 on a bad option.
    """
    import os

    from .hosting.datadir import DataDirError, default_data_dir, locate_room
    from .hosting.export import (
        ExportError,
        export_to_file,
        history_lines,
        parse_since,
        write_lines,
    )

    try:
        directory = locate_room(room, data_dir) if room is not None else data_dir
    except DataDirError as exc:
        raise fail(str(exc)) from None
    if directory is None:
        directory = default_data_dir("multichat")
    try:
        start = parse_since(since) if since is not None else None
        lines = history_lines(directory, fmt=fmt, since=start, include_private=include_private)
        if output is not None:
            export_to_file(lines, output)
        else:
            write_lines(lines, sys.stdout)
    except ExportError as exc:
        raise fail(str(exc), exc.code) from None
    except BrokenPipeError:
        # `multichat export | head`: the reader has all it wants. Python would complain
        # about stdout once more at exit; point it at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main() -> None:
    """The console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
