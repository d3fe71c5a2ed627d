"""The room's history on disk: an SQLite file that outlives the process, and the task feeding it.

The room never waits, and a disk does, so the two meet in `HistoryWriter`: the room queues each
entry with `append_nowait`, and the writer's task commits everything queued since its last
flush in one transaction, in a worker thread, then calls each entry's `on_done` back in trio's
thread, in order. The room echoes a message from that callback, which is what makes an echo an
acknowledgement: a committed transaction is in the file (its WAL) before the callback runs, so
a message any member saw survives `kill -9` of the server. A power cut is another matter:
docs/history.md says what `synchronous=NORMAL` and the writer's checkpoint every second cost.

Entries are kept in the order they were appended, which is the room's log order. Each carries
the room's `seq` as the room's log does: a message its own (unique, growing across restarts:
`last_seq()` says where to carry on), anything else the seq of the newest message before it.
So "after message N" is every message numbered above N and everything else numbered N or
above, which is what `since(N)` answers a member resuming after the last message it saw.

A private entry (`recipient` set) is shown to its two parties only. A party is matched by name
key (`protocol.names.name_key`), stored next to each name, so "Bob" and "bob" are one party, as
they are one member in the room.

`HistoryStore` is synchronous and safe to call from any thread (trio code calls it through
`trio.to_thread.run_sync`); its errors are `HistoryError`, each with a one-line message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..protocol.events import (
    BanEntry,
    CameBack,
    Join,
    Leave,
    Message,
    Notice,
    Renamed,
    Topic,
    WentAway,
)
from ..protocol.names import name_key
from .history_settings import HistorySettings

log = logging.getLogger("multichat.history")

# Stored in the file's `user_version`. A file from a newer multichat is refused, never
# rewritten: an older server cannot know what the newer schema's data means.
SCHEMA_VERSION = 1
# How long to wait for another connection that holds the file before calling it locked:
# Python's sqlite3 module waits 5 s by default; a reader (export) holds it for milliseconds.
BUSY_SECONDS = 5.0
# Pruning deletes this many entries per transaction, so a first prune of a large file does
# not hold every message's echo back for more than a few milliseconds at a time.
PRUNE_BATCH = 2000
# Readers (export) page through the file this many entries at a time.
READ_PAGE = 1000
# NORMAL, not FULL: in WAL mode a commit then writes the WAL without an fsync, which still
# survives the process being killed (the bytes are the kernel's), and a power cut rolls back
# the newest transactions but never damages the file. Every echo waits for its commit, and
# with FULL's fsync that took 2.7 to 5.6 ms at the median on the test machine (NORMAL: 1.0),
# more than the whole 3 ms p99 the steady benchmark allows a message; see docs/history.md.
SYNCHRONOUS = "NORMAL"
# With NORMAL the WAL reaches the disk at a checkpoint. The writer runs one this long after a
# commit, so a power cut costs about the last second of history instead of everything since
# SQLite's own checkpoint (up to 1,000 pages, minutes of chat); ext4 itself commits every 5 s.
SYNC_SECONDS = 1.0
# How often retention is applied: an hour of extra history is harmless, and a prune scans.
PRUNE_EVERY_SECONDS = 3600.0
# While the disk refuses writes, retrying on every message would spin on the error; once in
# this long notices freed space soon enough.
RETRY_SECONDS = 5.0
# Entries held in memory for the retry while the disk refuses them (a few MB of chat); older
# ones are given up on, and the host's log says how many.
MAX_UNSAVED = 10_000
SECONDS_PER_DAY = 86_400.0

# Entry types: one per room event that history keeps. The column is free text, so a new one
# needs no new schema (older versions skip what they do not know when replaying).
MESSAGE = "message"  # `sender` said `text` (to `recipient` alone, if set); extra: action
JOIN = "join"
LEAVE = "leave"  # `text`: why
NICK = "nick"  # `sender` is now called `text`
TOPIC = "topic"  # `sender` set the topic to `text`
NOTICE = "notice"  # moderation and other notices; `text` says it all
AWAY = "away"  # `sender` is away, saying `text`
BACK = "back"

# What the room's log holds that history keeps.
HistoryEvent = Message | Join | Leave | Renamed | Topic | Notice | WentAway | CameBack

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
_COLUMNS = "seq, ts, type, sender, text, recipient, extra"
# After message :seq, in the room's order (see the module's docstring).
_AFTER = "(seq > :seq OR (seq = :seq AND type != 'message'))"
# A private entry is visible to its two parties; :key is NULL for "nobody in particular".
_VISIBLE = "(recipient_key IS NULL OR :key IN (sender_key, recipient_key))"


class HistoryError(Exception):
    """The history file cannot be used; the message is one line, for the host."""


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One entry of the room's history as the store keeps it."""

    seq: int  # a message's own; anything else's, the newest message's before it
    ts: float
    type: str  # MESSAGE, JOIN, LEAVE, ...
    sender: str  # who posted, joined or left
    text: str = ""  # a message's text, a leave's reason
    recipient: str | None = None  # set for a private message: its other party
    extra: dict[str, Any] | None = None  # anything else a later entry type needs, as JSON

    @property
    def private(self) -> bool:
        return self.recipient is not None

    def visible_to(self, name: str | None) -> bool:
        """Whether the member called `name` may see this entry (None: nobody in particular)."""
        if self.recipient is None:
            return True
        if name is None:
            return False
        return name_key(name) in (name_key(self.sender), name_key(self.recipient))

    @classmethod
    def from_event(
        cls, event: HistoryEvent, *, seq: int | None = None, ts: float | None = None
    ) -> StoredEntry:
        """The entry for a room event. `seq` defaults to a message's own (other events carry
        none: pass the room's log entry's); `ts` is for the events with no time of their own
        (topic, away, back), and ignored for the others. Another event is a TypeError."""
        match event:
            case Message():
                extra = {"action": True} if event.action else None
                number = event.seq if seq is None else seq
                when = _ts(event.ts, ts)
                return cls(number, when, MESSAGE, event.sender, event.text, event.to, extra)
            case Join():
                return cls(_seq(seq), _ts(event.ts, ts), JOIN, event.name)
            case Leave():
                return cls(_seq(seq), _ts(event.ts, ts), LEAVE, event.name, event.reason)
            case Renamed():
                return cls(_seq(seq), _ts(event.ts, ts), NICK, event.old, event.new)
            case Topic():
                return cls(_seq(seq), _ts(None, ts), TOPIC, event.by, event.text)
            case Notice():
                return cls(_seq(seq), _ts(event.ts, ts), NOTICE, "", event.text)
            case WentAway():
                return cls(_seq(seq), _ts(None, ts), AWAY, event.name, event.text)
            case CameBack():
                return cls(_seq(seq), _ts(None, ts), BACK, event.name)
            case _:
                raise TypeError(f"history does not keep {type(event).__name__} events")

    def to_event(self) -> HistoryEvent | None:
        """The room event this entry replays as (None for a type this version does not know).

        A replayed message has `seq` and `ts` as stored; the other events have no seq.
        """
        kind, sender, text = self.type, self.sender, self.text
        if kind == MESSAGE:
            action = bool(self.extra and self.extra.get("action"))
            return Message(self.seq, self.ts, sender, text, to=self.recipient, action=action)
        if kind == JOIN:
            return Join(sender, self.ts)
        if kind == LEAVE:
            return Leave(sender, text, self.ts)
        if kind == NICK:
            return Renamed(sender, text, self.ts)
        if kind == TOPIC:
            return Topic(text, sender)
        if kind == NOTICE:
            return Notice(text, self.ts)
        if kind == AWAY:
            return WentAway(sender, text)
        if kind == BACK:
            return CameBack(sender)
        return None


def _seq(seq: int | None) -> int:
    if seq is None:
        raise ValueError("only a message has a seq of its own: pass the log entry's")
    return seq


def _ts(own: float | None, given: float | None) -> float:
    if own is not None:
        return own
    if given is None:
        raise ValueError("this event has no time of its own: pass ts")
    return given


def _entry(row: tuple[Any, ...]) -> StoredEntry:
    seq, ts, kind, sender, text, recipient, extra = row
    return StoredEntry(seq, ts, kind, sender, text, recipient, _load_extra(extra))


def _load_extra(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    # A file edited by hand may hold anything here; an entry without its extra beats a crash.
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _row(entry: StoredEntry) -> tuple[Any, ...]:
    recipient = entry.recipient
    return (
        entry.seq,
        entry.ts,
        entry.type,
        entry.sender,
        name_key(entry.sender),
        entry.text,
        recipient,
        None if recipient is None else name_key(recipient),
        None if entry.extra is None else json.dumps(entry.extra, ensure_ascii=False),
    )


def _ban(row: tuple[Any, ...]) -> BanEntry:
    address, name, until, reason, by = row
    return BanEntry(address, name, until, reason, by)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


class HistoryStore:
    """The history file: entries, bans and the last seq. Open with `open` or `in_memory`."""

    def __init__(
        self,
        name: str,
        write: sqlite3.Connection | None,
        read: sqlite3.Connection,
        *,
        shared_lock: bool = False,
    ) -> None:
        self.name = name  # the file, as messages name it
        self._write = write
        self._read = read
        # sqlite3 connections are not safe to share between threads unguarded; a separate
        # reader means a slow export or resume never holds a flush back (WAL lets them overlap).
        self._write_lock = threading.Lock()
        self._read_lock = self._write_lock if shared_lock else threading.Lock()

    # -- opening and closing --

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> HistoryStore:
        """Open (or, unless `read_only`, create) the history file at `path`.

        A file that is damaged, not ours, from a newer schema or locked raises HistoryError,
        and is left exactly as it was. A read-only store takes no lock and writes nothing to
        the file (SQLite may create its `-wal` and `-shm` companions), so it can read a room's
        history while the room runs.
        """
        path = Path(path)
        if read_only:
            return cls._open_read_only(path)
        try:
            # Created here, not by sqlite, to be private from its first byte: sqlite gives
            # its -wal and -shm files the mode of the database file.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise HistoryError(f"cannot create the history file {path}: {_reason(exc)}") from None
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
            _quick_check(write, path)
            read = _connect(str(path), uri=False)
            read.execute("PRAGMA query_only = 1")
        except HistoryError:
            _close_quietly(write, read)
            raise
        except (sqlite3.Error, OSError) as exc:
            _close_quietly(write, read)
            raise _open_error(path, exc) from None
        return cls(str(path), write, read)

    @classmethod
    def _open_read_only(cls, path: Path) -> HistoryStore:
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
        return cls(str(path), None, read)

    @classmethod
    def in_memory(cls) -> HistoryStore:
        """A store that keeps nothing on disk (`--ephemeral`): the same API, gone on exit."""
        conn = _connect(":memory:", uri=False)
        _prepare(conn, Path(":memory:"), create=True)
        return cls("memory", conn, conn, shared_lock=True)

    def sync(self) -> None:
        """Put every committed transaction on the disk (a checkpoint, which fsyncs the WAL).

        Runs on the read connection: a PASSIVE checkpoint never holds a flush back.
        """
        with self._read_lock:
            try:
                self._read.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(f"cannot sync the history {self.name}: {_reason(exc)}") from None

    def close(self) -> None:
        """Close the file; the last connection to close folds the WAL back into it."""
        with self._read_lock:
            if self._read is not self._write:
                self._read.close()
        with self._write_lock:
            if self._write is not None:
                self._write.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading --

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The read connection, in one read transaction: one consistent snapshot."""
        with self._read_lock:
            conn = self._read
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(f"cannot read the history {self.name}: {_reason(exc)}") from None

    def last_seq(self) -> int:
        """The newest seq ever given to an entry, even one pruned since: carry on after it."""
        with self._reading() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])

    def recent(self, limit: int, *, for_name: str | None = None) -> list[StoredEntry]:
        """The newest `limit` entries `for_name` may see (public ones only for None), oldest
        first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE {_VISIBLE} ORDER BY id DESC LIMIT :limit",
                {"key": _key(for_name), "limit": limit},
            ).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def since(
        self, seq: int, limit: int, *, for_name: str | None = None
    ) -> tuple[int, list[StoredEntry]]:
        """For a member resuming after message `seq`: how many messages it missed that are not
        in the list, and what it may see after that message, oldest first: at most the newest
        `limit` messages, with the other entries among and after them (as `Room.resume_point`
        replays the log).

        Messages pruned since are counted by their numbers (the store no longer knows whose
        they were, nor which numbers went to private messages of others), so then the count
        is an upper bound; it is exact otherwise.
        """
        params = {"seq": seq, "key": _key(for_name), "limit": limit}
        with self._reading() as conn:
            # The newest message this member is not sent: everything after it is.
            row = conn.execute(
                f"SELECT id FROM entries WHERE seq >= :seq AND {_AFTER} AND {_VISIBLE} "
                "AND type = 'message' ORDER BY seq DESC, id DESC LIMIT 1 OFFSET :limit",
                params,
            ).fetchone()
            params["bound"] = 0 if row is None else row[0]
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id > :bound AND seq >= :seq AND {_AFTER} "
                f"AND {_VISIBLE} ORDER BY id",
                params,
            ).fetchall()
            left_out = conn.execute(
                f"SELECT count(*) FROM entries WHERE id <= :bound AND seq >= :seq AND {_AFTER} "
                f"AND {_VISIBLE} AND type = 'message'",
                params,
            ).fetchone()[0]
            pruned = 0
            through = conn.execute(
                "SELECT value FROM meta WHERE key = 'pruned_through'"
            ).fetchone()[0]
            if through > seq:
                kept = conn.execute(
                    "SELECT count(*) FROM entries WHERE seq > ? AND seq <= ? AND type = 'message'",
                    (seq, through),
                ).fetchone()[0]
                pruned = through - seq - kept
        return int(left_out) + int(pruned), [_entry(row) for row in rows]

    def entries(
        self, *, since_ts: float | None = None, include_private: bool = False
    ) -> Iterator[StoredEntry]:
        """Every entry (from `since_ts` on), oldest first, a page at a time (for export).

        Private entries only with `include_private`: then all of them, whoever their parties.
        """
        after = 0
        while True:
            with self._reading() as conn:
                rows = conn.execute(
                    f"SELECT id, {_COLUMNS} FROM entries WHERE id > :after AND ts >= :since "
                    "AND (:private OR recipient_key IS NULL) ORDER BY id LIMIT :page",
                    {
                        "after": after,
                        "since": -math.inf if since_ts is None else since_ts,
                        "private": include_private,
                        "page": READ_PAGE,
                    },
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _entry(row[1:])
            after = rows[-1][0]

    def bans(self, *, now: float | None = None) -> list[BanEntry]:
        """The bans in force at `now` (default: the current time), in the order they were set
        (what `Moderation.restore` takes)."""
        now = time.time() if now is None else now
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT address, name, until, reason, banned_by FROM bans "
                "WHERE until IS NULL OR until > ? ORDER BY ts, rowid",
                (now,),
            ).fetchall()
        return [_ban(row) for row in rows]

    # -- writing --

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """The write connection, in one transaction, committed on success; errors worded."""
        if self._write is None:
            raise HistoryError(f"the history {self.name} was opened read-only")
        with self._write_lock:
            conn = self._write
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(f"cannot {action} {self.name}: {_reason(exc)}") from None

    def append(
        self,
        entries: Sequence[StoredEntry],
        *,
        last_seq: int = 0,
        bans: Sequence[tuple[BanEntry | None, str]] = (),
        now: float | None = None,
    ) -> None:
        """In one transaction: store `entries`, after those already stored; apply `bans` (a
        ban, or None to lift the ban on that address, as `Moderation.on_ban` reports them, set
        at `now`); record `last_seq` (or the newest seq of `entries`, if higher) as the newest
        seq given out.

        A message whose seq is already stored is an error, and rolls the transaction back
        whole. (The writer also checks that seqs never go backwards.)
        """
        rows = [_row(entry) for entry in entries]
        top = max([last_seq, *(entry.seq for entry in entries)])
        now = time.time() if now is None else now
        with self._writing("save history in") as conn:
            conn.executemany(
                "INSERT INTO entries (seq, ts, type, sender, sender_key, text, recipient, "
                "recipient_key, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for ban, address in bans:
                _apply_ban(conn, ban, address, now)
            conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'last_seq'", (top,))

    def add_ban(self, ban: BanEntry, *, now: float | None = None) -> None:
        """Record `ban`, replacing any ban on its address."""
        with self._writing("save a ban in") as conn:
            _apply_ban(conn, ban, ban.address, time.time() if now is None else now)

    def remove_ban(self, address: str) -> bool:
        """Lift the ban on `address`; whether there was one."""
        with self._writing("lift a ban in") as conn:
            return bool(conn.execute("DELETE FROM bans WHERE address = ?", (address,)).rowcount)

    def prune(self, keep_days: float, keep_entries: int, *, now: float | None = None) -> int:
        """Delete entries older than `keep_days` and all but the newest `keep_entries` (0: no
        bound of that kind), and bans that have expired; how many entries went."""
        now = time.time() if now is None else now
        bounds: dict[str, float | None] = {
            "ts": now - keep_days * SECONDS_PER_DAY if keep_days > 0 else None,
            "id": 0,  # entries up to this one go
            "batch": PRUNE_BATCH,
        }
        deleted = 0
        with self._writing("prune") as conn:
            conn.execute("DELETE FROM bans WHERE until IS NOT NULL AND until <= ?", (now,))
            if keep_entries > 0:
                row = conn.execute(
                    "SELECT id FROM entries ORDER BY id DESC LIMIT 1 OFFSET ?", (keep_entries,)
                ).fetchone()
                bounds["id"] = 0 if row is None else row[0]
        doomed = "(id <= :id OR ts < :ts)"
        while True:
            with self._writing("prune") as conn:
                row = conn.execute(
                    "SELECT max(id), max(seq) FROM (SELECT id, seq FROM entries "
                    f"WHERE {doomed} ORDER BY id LIMIT :batch)",
                    bounds,
                ).fetchone()
                if row[0] is None:
                    return deleted
                cursor = conn.execute(
                    f"DELETE FROM entries WHERE id <= :top AND {doomed}", {**bounds, "top": row[0]}
                )
                deleted += cursor.rowcount
                conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = 'pruned_through'", (row[1],)
                )


def _apply_ban(conn: sqlite3.Connection, ban: BanEntry | None, address: str, now: float) -> None:
    # Deleted first, so a ban set again moves to the end of the order, as in `Moderation`.
    conn.execute("DELETE FROM bans WHERE address = ?", (address,))
    if ban is not None:
        conn.execute(
            "INSERT INTO bans VALUES (?, ?, ?, ?, ?, ?)",
            (address, ban.name, ban.until, ban.reason, ban.by, now),
        )


def _key(name: str | None) -> str | None:
    return None if name is None else name_key(name)


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
    reason = _reason(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in reason or "malformed" in reason
    ):
        return HistoryError(f"the history file {path} is damaged ({reason}); it was left untouched")
    if "locked" in reason:
        return HistoryError(
            f"the history file {path} is locked by another program; close it and try again"
        )
    return HistoryError(f"cannot open the history file {path}: {reason}")


def _close_quietly(*conns: sqlite3.Connection | None) -> None:
    for conn in conns:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


OnDone = Callable[[bool], None]
BanChange = tuple[BanEntry | None, str]  # a ban, or None for lifted, and its address


class HistoryWriter:
    """Feeds a `HistoryStore` from trio without ever making the room wait.

    Run it with `await nursery.start(writer.run)`; then `append_nowait(entry, on_done)` queues
    an entry, and `on_done(saved)` is called in trio's thread once the entry's transaction
    committed (`saved` True), or once saving failed (`saved` False; see `failing`). Callbacks
    run in the order the entries were appended. `set_ban_nowait` queues a ban the same way
    (its signature is `Moderation.on_ban`'s).

    While the disk refuses writes, `failing` is the reason (and `on_failing(reason)` was
    called); entries keep being acknowledged at once with `saved` False, are kept in memory
    (up to MAX_UNSAVED), and are saved by the first retry that succeeds, when `on_failing(None)`
    is called.
    """

    def __init__(
        self, store: HistoryStore, *, on_failing: Callable[[str | None], None] | None = None
    ) -> None:
        self.store = store
        self.failing: str | None = None
        self.given_up = 0  # entries dropped from memory before the disk took them
        self._on_failing = on_failing or (lambda reason: None)
        self._queue: list[tuple[StoredEntry, OnDone | None]] = []
        self._bans: dict[str, BanEntry | None] = {}  # by address, in the order set
        self._ban_changes = 0  # queued in `_bans`, counting each one a later one replaced
        self._unsaved: deque[StoredEntry] = deque()
        self._unsaved_bans: dict[str, BanEntry | None] = {}
        self._last_seq = store.last_seq()
        self._retry_at = -math.inf
        self._closed = False
        self._wakeup = trio.Event()
        self._asked = 0  # entries and ban changes queued, ever
        self._done = 0  # ... and done with
        self._progress = trio.Event()
        self._committed = trio.Event()  # set by a commit the next sync has not covered

    @property
    def last_seq(self) -> int:
        """The newest seq appended (or given out before this writer started)."""
        return self._last_seq

    def append_nowait(self, entry: StoredEntry, on_done: OnDone | None = None) -> None:
        """Queue `entry` for the next flush; never blocks.

        Raises ValueError if its seq goes backwards (or, for a message, is not new), and
        trio.ClosedResourceError once the writer's task has ended.
        """
        self._check_open()
        if entry.seq < self._last_seq or (entry.type == MESSAGE and entry.seq == self._last_seq):
            raise ValueError(
                f"{entry.type} seq {entry.seq} comes after message {self._last_seq}: a message "
                "needs a new one, anything else at least that"
            )
        self._last_seq = entry.seq
        self._queue.append((entry, on_done))
        self._asked += 1
        self._wakeup.set()

    def set_ban_nowait(self, ban: BanEntry | None, address: str) -> None:
        """Queue a ban on `address` (None: the ban was lifted) for the next flush."""
        self._check_open()
        self._bans.pop(address, None)
        self._bans[address] = ban
        self._ban_changes += 1
        self._asked += 1
        self._wakeup.set()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the history writer has stopped")

    async def flush(self) -> None:
        """Wait until everything queued before this call is done with (`on_done` ran)."""
        target = self._asked
        while self._done < target:
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit what is queued, a transaction per flush, until cancelled; then once more."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sync_periodically)
                task_status.started()
                while True:
                    await self._wait()
                    # A transaction that committed must be acknowledged, even on the way out.
                    with trio.CancelScope(shield=True):
                        await self._flush()
        finally:
            self._closed = True
            with trio.CancelScope(shield=True):
                await self._flush(last=True)
            if self._unsaved or self._unsaved_bans:
                log.error(
                    "%d history entries and %d ban changes could not be saved: %s",
                    len(self._unsaved),
                    len(self._unsaved_bans),
                    self.failing,
                )

    async def _sync_periodically(self) -> None:
        while True:
            await self._committed.wait()
            await trio.sleep(SYNC_SECONDS)
            self._committed = trio.Event()
            try:
                await trio.to_thread.run_sync(self.store.sync)
            except HistoryError as exc:
                log.warning("%s", exc)

    async def _wait(self) -> None:
        """Until something is queued, or unsaved things are due for a retry."""
        while not self._queue and not self._bans:
            self._wakeup = trio.Event()
            if not self._unsaved and not self._unsaved_bans:
                await self._wakeup.wait()
                continue
            with trio.move_on_at(self._retry_at):
                await self._wakeup.wait()
            if trio.current_time() >= self._retry_at:
                return

    async def _flush(self, *, last: bool = False) -> None:
        pending, self._queue = self._queue, []
        bans, self._bans = self._bans, {}
        done, self._ban_changes = len(pending) + self._ban_changes, 0
        if self.failing is not None and not last and trio.current_time() < self._retry_at:
            # Known to fail: no point making these wait for the disk.
            self._keep_unsaved([entry for entry, _ in pending], bans)
            self._finish(pending, done, saved=False)
            return
        batch = [*self._unsaved, *(entry for entry, _ in pending)]
        changes = self._unsaved_bans | bans
        if not batch and not changes:
            return
        commit = partial(
            self.store.append,
            batch,
            last_seq=self._last_seq,
            bans=[(ban, address) for address, ban in changes.items()],
        )
        try:
            await trio.to_thread.run_sync(commit)
        except HistoryError as exc:
            self._retry_at = trio.current_time() + RETRY_SECONDS
            self._unsaved.clear()
            self._unsaved_bans.clear()
            self._keep_unsaved(batch, changes)
            self._set_failing(str(exc))
            self._finish(pending, done, saved=False)
            return
        self._unsaved.clear()
        self._unsaved_bans.clear()
        self._committed.set()
        self._set_failing(None)
        self._finish(pending, done, saved=True)

    def _keep_unsaved(self, entries: list[StoredEntry], bans: dict[str, BanEntry | None]) -> None:
        self._unsaved.extend(entries)
        for address, ban in bans.items():
            self._unsaved_bans.pop(address, None)
            self._unsaved_bans[address] = ban
        dropped = len(self._unsaved) - MAX_UNSAVED
        if dropped > 0:
            for _ in range(dropped):
                self._unsaved.popleft()
            self.given_up += dropped
            log.warning("gave up on %d unsaved history entries (too many to hold)", dropped)

    def _finish(
        self, pending: list[tuple[StoredEntry, OnDone | None]], done: int, *, saved: bool
    ) -> None:
        self._done += done
        for _, on_done in pending:
            if on_done is not None:
                on_done(saved)
        self._progress.set()
        self._progress = trio.Event()

    def _set_failing(self, reason: str | None) -> None:
        if reason == self.failing:
            return
        if reason is None:
            log.info("history is being saved again")
        else:
            log.warning("history is not being saved: %s", reason)
        self.failing = reason
        self._on_failing(reason)


async def prune_periodically(
    store: HistoryStore,
    settings: HistorySettings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply retention now and every PRUNE_EVERY_SECONDS, in a worker thread, until cancelled."""
    task_status.started()
    while True:
        try:
            removed = await trio.to_thread.run_sync(
                partial(store.prune, settings.keep_days, settings.keep_entries)
            )
        except HistoryError as exc:
            log.warning("cannot apply history retention: %s", exc)
        else:
            if removed:
                log.info("removed %d history entries past retention", removed)
        await trio.sleep(PRUNE_EVERY_SECONDS)
