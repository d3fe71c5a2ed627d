"""`multichat export`: a room's transcript."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail


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

    from ..hosting.datadir import DataDirError, default_data_dir, locate_room
    from ..hosting.export import (
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
