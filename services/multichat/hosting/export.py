"""`multichat export`: a room's history as text to read, or JSON lines for programs.

It reads the history file through a read-only connection and takes no lock, so it works while
the room runs (SQLite's WAL mode lets a reader see every committed entry without holding the
writer back) and after it stopped. Private messages stay out unless asked for: whoever runs
export has the file, but a transcript pasted somewhere should not carry them by surprise.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from ..protocol import textmode
from ..protocol.sanitize import clean_for_terminal, clean_text
from ..server.history import HistoryError, HistoryStore
from ..server.history_entries import MESSAGE, StoredEntry
from .datadir import HISTORY_FILE

EXIT_USAGE = 2  # as for every other bad option (click's convention)
FORMATS = ("text", "json")
# What `--since` accepts, in local time, as people write dates.
SINCE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M")
# `[2025-06-15 14:03:07] ` is this wide: a message's further lines line up under its text.
_INDENT = " " * 22


class ExportError(Exception):
    """A reason export cannot run, in one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def parse_since(text: str) -> float:
    """The time `YYYY-MM-DD` or `YYYY-MM-DD HH:MM` means in local time, as a Unix time."""
    for pattern in SINCE_FORMATS:
        try:
            moment = datetime.datetime.strptime(text.strip(), pattern)
        except ValueError:
            continue
        return moment.timestamp()  # a naive datetime is local time
    raise ExportError(
        f"--since {text!r} is not a date: write YYYY-MM-DD or 'YYYY-MM-DD HH:MM'", EXIT_USAGE
    )


def format_text(entry: StoredEntry) -> str:
    """One entry as people read it: `[YYYY-MM-DD HH:MM:SS] alice: hi`, `* bob joined`."""
    stamp = time.strftime("[%Y-%m-%d %H:%M:%S]", time.localtime(entry.ts))
    # The room cleaned all of this before storing it; a file edited by hand is not trusted
    # to keep escape sequences away from the reader's terminal.
    sender = clean_for_terminal(entry.sender, single_line=True)
    if entry.type == MESSAGE:
        body = clean_text(entry.text)
        if entry.extra and entry.extra.get("action"):
            line = f"* {sender} {body}"
        elif entry.recipient is not None:
            line = f"{sender} -> {clean_for_terminal(entry.recipient, single_line=True)}: {body}"
        else:
            line = f"{sender}: {body}"
    else:
        event = entry.to_event()
        if event is None:  # a type from a newer multichat
            text = clean_text(entry.text)
            line = f"* {sender} {entry.type}" + (f": {text}" if text else "")
        else:
            # The same words members saw in plain-text mode.
            rendered = textmode.render(event).decode("utf-8").rstrip("\n")
            line = clean_text(rendered.replace("\n* ", "\n"))
    return f"{stamp} " + line.replace("\n", "\n" + _INDENT)


def format_json(entry: StoredEntry) -> str:
    """One entry as a JSON object on one line: seq, ts, type, from, text (to, action)."""
    record: dict[str, object] = {
        "seq": entry.seq,
        "ts": entry.ts,
        "type": entry.type,
        "from": entry.sender,
        "text": entry.text,
    }
    if entry.recipient is not None:
        record["to"] = entry.recipient
    if entry.extra and entry.extra.get("action"):
        record["action"] = True
    return json.dumps(record, ensure_ascii=False)


def history_lines(
    data_dir: Path, *, fmt: str = "text", since: float | None = None, include_private: bool = False
) -> Iterator[str]:
    """The room's history in `data_dir`, one formatted line (no newline) per entry.

    Everything that can be checked before the first line is (raising ExportError), so a bad
    option never leaves half an output file behind.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be text or json, not {fmt!r}", EXIT_USAGE)
    if not data_dir.is_dir():
        raise ExportError(f"there is no data directory {data_dir}")
    path = data_dir / HISTORY_FILE
    if not path.exists():
        raise ExportError(
            f"there is no history in {data_dir} (has a room run there without --ephemeral?)"
        )
    try:
        store = HistoryStore.open(path, read_only=True)
    except HistoryError as exc:
        raise ExportError(str(exc)) from None
    render = format_text if fmt == "text" else format_json
    return _lines(store, render, since, include_private)


def _lines(
    store: HistoryStore,
    render: Callable[[StoredEntry], str],
    since: float | None,
    include_private: bool,
) -> Iterator[str]:
    try:
        for entry in store.entries(since_ts=since, include_private=include_private):
            yield render(entry)
    except HistoryError as exc:
        raise ExportError(str(exc)) from None
    finally:
        store.close()


def write_lines(lines: Iterator[str], out: TextIO) -> int:
    """Write `lines` to `out`, each with a newline; how many."""
    count = 0
    for line in lines:
        out.write(line + "\n")
        count += 1
    out.flush()
    return count


def export_to_file(lines: Iterator[str], output: Path) -> int:
    """Write `lines` to `output`, mode 0600, whole or not at all (a failure midway leaves any
    earlier file there as it was)."""
    directory = output.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            count = write_lines(lines, out)
        os.replace(temporary, output)
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return count
