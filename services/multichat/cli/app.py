"""The `multichat` typer app: its options of its own (`--version`), and how a command fails
(one line on stderr, no traceback, a non-zero exit)."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from .. import __version__

app = typer.Typer(
    name="multichat",
    help="Host a chat room for friends, on your LAN or across the internet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def unwrap_help(app: typer.Typer) -> None:
    """Give each command the help its docstring says, with each paragraph on one line.

    typer keeps a docstring's line breaks after its first paragraph, and rich then wraps each
    source line again: on an 80-column terminal every paragraph came out in ragged pieces
    ("and, when" alone on a line). One line a paragraph, rich wraps it to the terminal.
    """
    for command in app.registered_commands:
        if command.help is None and command.callback is not None:
            doc = inspect.getdoc(command.callback) or ""
            command.help = "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))


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


# Variables read without an option of their own; typer shows `[env var: ...]` for the others.
PASSWORD_ENV = "MULTICHAT_PASSWORD (the room password, when no option or file gives it)"
STATE_ENV = "MULTICHAT_STATE_DIR (where running rooms are recorded, for status and down)"
NGROK_ENV = "NGROK_AUTHTOKEN (your ngrok authtoken; else the one in ngrok's config file)"


def environment(*lines: str) -> str:
    """An epilog listing the environment variables a command reads."""
    return "Environment: " + "; ".join(lines) + "."
