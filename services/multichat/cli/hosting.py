"""Hosting a room: `serve`, `up`, `tunnel`, and `status` and `down` for a room that runs.

Each command imports the server and the launcher when it runs, not when the app is built:
`multichat connect` on a friend's machine would otherwise load them all (and pyngrok) first.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import TYPE_CHECKING, Annotated

import trio
import typer

from ..hosting import control
from ..protocol.events import DEFAULT_PORT
from .app import NGROK_ENV, PASSWORD_ENV, STATE_ENV, app, environment, fail
from .options import (
    BackplaneOpt,
    ConfigOpt,
    DataDirOpt,
    EphemeralOpt,
    HostOpt,
    NgrokConfigOpt,
    NgrokPathOpt,
    NoTcpOpt,
    PasswordFileOpt,
    PortOpt,
    RoomOpt,
    StatePortOpt,
    TlsCertOpt,
    TlsKeyOpt,
    VerboseOpt,
)

if TYPE_CHECKING:
    from ..hosting.statefile import RoomState


@app.command(epilog=environment(PASSWORD_ENV, STATE_ENV))
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
    from ..hosting import launcher, process
    from ..server.auth import new_token
    from . import settings

    limits = settings.load_config(config)
    rooms = settings.room_names(room, limits)
    open_rooms = settings.open_rooms_setting(config)
    shared = settings.backplane_setting(backplane, config)
    try:
        password = process.password_from(None, password_file, prompt=True)
    except process.HostError as exc:
        raise fail(str(exc)) from None
    if password is None:
        raise fail(
            "no room password: pass --password-file FILE, set MULTICHAT_PASSWORD, "
            "or run on a terminal to be asked"
        )
    data = settings.open_room(rooms, data_dir, ephemeral, tls_cert, tls_key, config)
    certificate = data.certificate
    process.setup_logging(verbose)
    token = new_token()
    server = settings.room_server(
        password, rooms, limits, token, data, open_rooms=open_rooms, backplane=shared
    )

    async def announce(nursery: trio.Nursery, state: RoomState) -> None:
        launcher.announce_invites(state, certificate.where, sys.stderr)

    try:
        process.freeze_startup_objects()
        process.hand_the_gil_over_quickly()
        trio.run(
            partial(
                process.host_room,
                server,
                port,
                host,
                token=token,
                proxy_port=proxy_port,
                on_started=announce,
                fingerprint=certificate.fingerprint,
            )
        )
    except process.HostError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        data.close()


@app.command(epilog=environment(NGROK_ENV, PASSWORD_ENV, STATE_ENV))
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
    from ..hosting import launcher, process
    from ..hosting.tunnel import TunnelSettings
    from ..server.auth import new_token
    from . import settings

    limits = settings.load_config(config)
    rooms = settings.room_names(room, limits)
    open_rooms = settings.open_rooms_setting(config)
    shared = settings.backplane_setting(backplane, config)
    try:
        chosen = process.password_from(password, password_file, prompt=False)
    except process.HostError as exc:
        raise fail(str(exc)) from None
    banner = launcher.Banner(rooms[0], qr=not no_qr, rooms=tuple(rooms[1:]))
    if chosen is None:
        chosen = banner.password = launcher.generate_password()
    tunnel_settings = None
    if not no_tunnel:
        tunnel_settings = TunnelSettings(
            ngrok_path=str(ngrok_path) if ngrok_path is not None else None,
            config_path=str(ngrok_config) if ngrok_config is not None else None,
            verbose=verbose,
            tcp=not no_tcp,
        )
    data = settings.open_room(rooms, data_dir, ephemeral, tls_cert, tls_key, config)
    certificate = data.certificate
    banner.identity = certificate.where
    process.setup_logging(verbose)
    token = new_token()
    server = settings.room_server(
        chosen, rooms, limits, token, data, open_rooms=open_rooms, backplane=shared
    )
    process.freeze_startup_objects()
    process.hand_the_gil_over_quickly()
    try:
        trio.run(
            partial(
                launcher.run_up,
                server,
                port,
                host,
                token=token,
                banner=banner,
                settings=tunnel_settings,
                fingerprint=certificate.fingerprint,
            )
        )
    except process.HostError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        data.close()


@app.command(epilog=environment(NGROK_ENV))
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
    from ..client.address import AddressError, parse_address
    from ..hosting import launcher
    from ..hosting.process import setup_logging
    from ..hosting.tunnel import TunnelSettings

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


@app.command(epilog=environment(STATE_ENV))
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


@app.command(epilog=environment(STATE_ENV))
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
