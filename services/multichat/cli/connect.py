"""`multichat connect`: joining a room from a terminal."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app, fail


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
            help="Which room of the server to join (default: the one an invite or a link "
            "names, else the server's first); /rooms lists them, /join NAME moves.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join a room: a chat window on a terminal, plain lines otherwise (see docs/client.md).

    Exit codes: 0 left or room closed, 1 cannot connect, 2 usage, 3 refused (password, name,
    banned, locked), 4 connection lost, kicked or banned, or lines not delivered.
    """
    from ..client.address import AddressError, parse_address
    from ..client.connect import EXIT_USAGE, ConnectExit, run_connect

    try:
        target = parse_address(address)
    except AddressError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if room is None and target.fingerprint is None:
        # A link's `#room=` is asked for as --room is: a room that is not there is an error.
        # (An invite's room falls back to the first room: it may have been renamed since.)
        room = target.room
    try:
        code = run_connect(target, name, password, plain=plain, bell=not no_bell, room=room)
    except ConnectExit as exc:
        raise fail(str(exc), exc.code) from None
    raise typer.Exit(code)
