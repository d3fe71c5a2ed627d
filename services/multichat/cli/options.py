"""The options and arguments the commands share, each with its help text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


StatePortOpt = Annotated[
    int | None, typer.Option("--port", "-p", help="The room's port, when several are up.")
]


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


# -- personal invites to the running room (docs/invites.md) --

NoQrOpt = Annotated[
    bool, typer.Option("--no-qr", help="Leave out the QR code (drawn with text, for a phone).")
]
