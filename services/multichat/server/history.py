"""The room's history on disk: an SQLite file (WAL mode) that outlives the process.

The room's task never touches it: history_writer.py commits through the server's history
process (history_process.py), which opens the file too, and reads go through
`trio.to_thread.run_sync`. Entries are kept in the order they were appended, which is the room's
log order, with the room's `seq` (history_entries.py), so "after message N" is every
message numbered above N and everything else numbered N or above: what `since(N)` answers a
member resuming after the last message it saw. A private entry is shown to its two parties
only, matched by name key (stored next to each name), as the room matches members.

`HistoryStore` is synchronous and safe to call from any thread; its errors are `HistoryError`,
each with a one-line message. The file itself, its schema and how it is opened and checked,
is history_file.py's. docs/history.md says what a power cut can cost.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..protocol.events import BanEntry
from .history_entries import StoredEntry

# (SCHEMA_VERSION and HistoryError are the store's too, for its callers.)
from .history_file import SCHEMA_VERSION as SCHEMA_VERSION
from .history_file import HistoryError as HistoryError
from .history_file import open_in_memory, open_read_only, open_writable, reason
from .history_rows import (
    AFTER,
    COLUMNS,
    LAST_SEQ,
    VISIBLE,
    apply_ban,
    ban_of,
    entry_of,
    insert,
    key_or_none,
    one_statement,
)

log = logging.getLogger("multichat.history")

# Pruning deletes this many entries per transaction, so a first prune of a large file does
# not hold every message's echo back for more than a few milliseconds at a time.
PRUNE_BATCH = 2000
# Readers (export) page through the file this many entries at a time.
READ_PAGE = 1000
SECONDS_PER_DAY = 86_400.0


class HistoryStore:
    """The history file: entries, bans and the last seq. Open with `open` or `in_memory`."""

    def __init__(
        self,
        name: str,
        write: sqlite3.Connection | None,
        read: sqlite3.Connection,
        *,
        shared_lock: bool = False,
        path: Path | None = None,
    ) -> None:
        self.name = name  # the file, as messages name it
        self.path = path  # None: kept in memory
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
        write, read = open_writable(path)
        return cls(str(path), write, read, path=path)

    @classmethod
    def _open_read_only(cls, path: Path) -> HistoryStore:
        read = open_read_only(path)
        return cls(str(path), None, read, path=path)

    @classmethod
    def in_memory(cls) -> HistoryStore:
        """A store that keeps nothing on disk (`--ephemeral`): the same API, gone on exit."""
        conn = open_in_memory()
        return cls("memory", conn, conn, shared_lock=True)

    def sync(self) -> None:
        """Put every committed transaction on the disk (a checkpoint, which fsyncs the WAL).

        Runs on the read connection: a PASSIVE checkpoint never holds a flush back.
        """
        with self._read_lock:
            try:
                self._read.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(f"cannot sync the history {self.name}: {reason(exc)}") from None

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
                raise HistoryError(f"cannot read the history {self.name}: {reason(exc)}") from None

    def last_seq(self) -> int:
        """The newest seq ever given to an entry, even one pruned since: carry on after it."""
        with self._reading() as conn:
            return int(conn.execute(LAST_SEQ).fetchone()[0])

    def recent(self, limit: int, *, for_name: str | None = None) -> list[StoredEntry]:
        """The newest `limit` entries `for_name` may see (public ones only for None), oldest
        first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM entries WHERE {VISIBLE} ORDER BY id DESC LIMIT :limit",
                {"key": key_or_none(for_name), "limit": limit},
            ).fetchall()
        return [entry_of(row) for row in reversed(rows)]

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
        params = {"seq": seq, "key": key_or_none(for_name), "limit": limit}
        with self._reading() as conn:
            # The newest message this member is not sent: everything after it is.
            row = conn.execute(
                f"SELECT id FROM entries WHERE seq >= :seq AND {AFTER} AND {VISIBLE} "
                "AND type = 'message' ORDER BY seq DESC, id DESC LIMIT 1 OFFSET :limit",
                params,
            ).fetchone()
            params["bound"] = 0 if row is None else row[0]
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM entries WHERE id > :bound AND seq >= :seq AND {AFTER} "
                f"AND {VISIBLE} ORDER BY id",
                params,
            ).fetchall()
            left_out = conn.execute(
                f"SELECT count(*) FROM entries WHERE id <= :bound AND seq >= :seq AND {AFTER} "
                f"AND {VISIBLE} AND type = 'message'",
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
        return int(left_out) + int(pruned), [entry_of(row) for row in rows]

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
                    f"SELECT id, {COLUMNS} FROM entries WHERE id > :after AND ts >= :since "
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
                yield entry_of(row[1:])
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
        return [ban_of(row) for row in rows]

    # -- writing --

    @contextlib.contextmanager
    def _statement(self, action: str) -> Iterator[sqlite3.Connection]:
        """The write connection for one statement outside a transaction; errors worded."""
        if self._write is None:
            raise HistoryError(f"the history {self.name} was opened read-only")
        with self._write_lock:
            try:
                yield self._write
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(f"cannot {action} {self.name}: {reason(exc)}") from None

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
                raise HistoryError(f"cannot {action} {self.name}: {reason(exc)}") from None

    def append(
        self,
        entries: Sequence[StoredEntry],
        *,
        last_seq: int = 0,
        bans: Sequence[tuple[BanEntry | None, str]] = (),
        now: float | None = None,
        again: bool = False,
    ) -> None:
        """In one transaction: store `entries`, after those already stored; apply `bans` (a
        ban, or None to lift the ban on that address, as `Moderation.on_ban` reports them, set
        at `now`); record `last_seq` (or the newest seq of `entries`, if higher) as the newest
        seq given out.

        A message whose seq is already stored is an error, and rolls the transaction back
        whole (the writer also checks that seqs never go backwards), unless `again`: a retry
        of a commit whose outcome is unknown (its process died) leaves out the entries that
        are stored already, the same seq, type, time and sender.
        """
        top = max([last_seq, *(entry.seq for entry in entries)])
        now = time.time() if now is None else now
        if again and entries:
            entries = self._not_stored(entries)
        if not bans and one_statement(len(entries)) and top == entries[-1].seq:
            # The common case, one statement, so its own transaction: BEGIN, INSERT, UPDATE and
            # COMMIT would be four rounds into SQLite. `last_seq()` reads the newest entry's
            # seq, so the meta row only needs the seqs entries do not show.
            with self._statement("save history in") as conn:
                insert(conn, entries)
            return
        with self._writing("save history in") as conn:
            insert(conn, entries)
            for ban, address in bans:
                apply_ban(conn, ban, address, now)
            conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'last_seq'", (top,))

    def _not_stored(self, entries: Sequence[StoredEntry]) -> list[StoredEntry]:
        with self._reading() as conn:
            stored = set(
                conn.execute(
                    "SELECT seq, type, ts, sender FROM entries WHERE seq >= ?",
                    (min(entry.seq for entry in entries),),
                ).fetchall()
            )
        return [e for e in entries if (e.seq, e.type, e.ts, e.sender) not in stored]

    def add_ban(self, ban: BanEntry, *, now: float | None = None) -> None:
        """Record `ban`, replacing any ban on its address."""
        with self._writing("save a ban in") as conn:
            apply_ban(conn, ban, ban.address, time.time() if now is None else now)

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
            conn.execute(f"UPDATE meta SET value = ({LAST_SEQ}) WHERE key = 'last_seq'")
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


OnDone = Callable[[bool], None]
BanChange = tuple[BanEntry | None, str]  # a ban, or None for lifted, and its address
