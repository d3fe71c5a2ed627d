"""The history's SQLite file: its schema, opening it checked, and what goes wrong in one line.

A file is refused, and left exactly as it was, when it is damaged, not a multichat history,
from a newer schema, or locked by another program; each as a `HistoryError` the host can act
on. history.py reads and writes the connections opened here.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

# Stored in the file's `user_version`. A file from a newer multichat is refused, never
# rewritten: an older server cannot know what the newer schema's data means.
SCHEMA_VERSION = 1
# How long to wait for another connection that holds the file before calling it locked:
# Python's sqlite3 module waits 5 s by default; a reader (export) holds it for milliseconds.
BUSY_SECONDS = 5.0
# NORMAL, not FULL: in WAL mode a commit then writes the WAL without an fsync, which still
# survives the process being killed (the bytes are the kernel's), and a power cut rolls back
# the newest transactions but never damages the file. Every echo waits for its commit, and
# with FULL's fsync that took 2.7 to 5.6 ms at the median on the test machine (NORMAL: 1.0),
# more than the whole 3 ms p99 the steady benchmark allows a message; see docs/history.md.
SYNCHRONOUS = "NORMAL"

# The entry's type is free text (history_entries.py names them), so a new one needs no new
# schema: older versions skip what they do not know when replaying.
_SCHEMA = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    text TEXT NOT NULL,
    recipient TEXT,
    recipient_key TEXT,
    extra TEXT
);
CREATE UNIQUE INDEX entries_message_seq ON entries (seq) WHERE type = 'message';
CREATE INDEX entries_seq ON entries (seq);
CREATE INDEX entries_ts ON entries (ts);
CREATE TABLE bans (
    address TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    until REAL,
    reason TEXT NOT NULL,
    banned_by TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('last_seq', 0), ('pruned_through', 0);
"""


class HistoryError(Exception):
    """The history file cannot be used; the message is one line, for the host."""


def reason(exc: BaseException) -> str:
    """What went wrong, in a few words: an OS error's own, else the exception's on one line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def open_writable(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The write and read connections of the history file at `path`, made if it is not there
    (private to its owner from its first byte)."""
    try:
        # Created here, not by sqlite, to be private from its first byte: sqlite gives
        # its -wal and -shm files the mode of the database file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise HistoryError(f"cannot create the history file {path}: {reason(exc)}") from None
    else:
        os.close(fd)
    if not path.is_file():
        raise HistoryError(f"the history file {path} is not a regular file")
    write = read = None
    try:
        write = _connect(str(path), uri=False)
        _prepare(write, path, create=True)
        mode = write.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise HistoryError(
                f"the history file {path} cannot use SQLite's WAL mode (a network "
                "filesystem?); put the data directory on a local disk"
            )
        write.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        # SQLite's own checkpoint (every 1,000 pages) runs inside the commit that crosses
        # the mark, with its fsyncs: at a thousand messages a second that was every 250 ms,
        # and each held an echo 14 to 21 ms. `sync`, on the other connection, checkpoints
        # instead, a second after a commit (history_writer.SYNC_SECONDS).
        write.execute("PRAGMA wal_autocheckpoint = 0")
        _quick_check(write, path)
        read = _connect(str(path), uri=False)
        read.execute("PRAGMA query_only = 1")
    except HistoryError:
        _close_quietly(write, read)
        raise
    except (sqlite3.Error, OSError) as exc:
        _close_quietly(write, read)
        raise _open_error(path, exc) from None
    return write, read


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that reads the history file at `path` and writes nothing to it."""
    if not path.is_file():
        raise HistoryError(f"there is no history file at {path}")
    read = None
    try:
        read = _connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        _prepare(read, path, create=False)
    except HistoryError:
        _close_quietly(read)
        raise
    except (sqlite3.Error, OSError) as exc:
        _close_quietly(read)
        raise _open_error(path, exc) from None
    return read


def open_in_memory() -> sqlite3.Connection:
    """One connection to a new history that lives in memory only."""
    conn = _connect(":memory:", uri=False)
    _prepare(conn, Path(":memory:"), create=True)
    return conn


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    # Autocommit (isolation_level None): every transaction here is begun and ended explicitly.
    return sqlite3.connect(
        target, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False, uri=uri
    )


def _prepare(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Check that the file is a multichat history this version reads; create the schema in a
    new, empty file."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"the history file {path} is from a newer multichat (schema {version}; this one "
            f"reads up to {SCHEMA_VERSION}); upgrade multichat, or use another --data-dir"
        )
    if version == SCHEMA_VERSION:
        return
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if tables:
        raise HistoryError(f"{path} is not a multichat history file; it was left untouched")
    if not create:
        raise HistoryError(f"the history file {path} is empty: its room has not started yet")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    # A damaged page found now is a clear message at startup, not an error mid-conversation.
    # quick_check reads every page once (about 0.1 s for a 20 MB file).
    result = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
    if result != "ok":
        detail = " ".join(result.replace("*** in database main ***", "").split())
        raise HistoryError(f"the history file {path} is damaged ({detail}); it was left untouched")


def _open_error(path: Path, exc: BaseException) -> HistoryError:
    why = reason(exc)
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in why or "malformed" in why):
        return HistoryError(f"the history file {path} is damaged ({why}); it was left untouched")
    if "locked" in why:
        return HistoryError(
            f"the history file {path} is locked by another program; close it and try again"
        )
    return HistoryError(f"cannot open the history file {path}: {why}")


def _close_quietly(*conns: sqlite3.Connection | None) -> None:
    for conn in conns:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
