"""The history's rows: an entry as the columns SQLite stores, and back; the SQL fragments
the store's queries share; and the multi-row INSERTs that store a batch.

No I/O of its own: each function takes the store's connection (history.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..protocol.events import BanEntry
from ..protocol.names import name_key
from .history_entries import StoredEntry

COLUMNS = "seq, ts, type, sender, text, recipient, extra"
# A batch is stored with multi-row INSERTs of these sizes, powers of two up to 512 rows (9
# parameters each, far below SQLite's 32,766): every statement is prepared once and cached,
# and a batch of n rows takes at most log2(n) + n / 512 statements. Not executemany, which
# steps SQLite once a row (when commits ran in a thread beside the event loop, each step also
# waited for the GIL: 20,000 rows took 5.7 s, not 0.07); not one JSON array through
# json_each, which made the loop encode the batch (1.4 µs a row) and SQLite parse every row
# nine times.
_CHUNKS = tuple(1 << i for i in range(10))
_INSERTED = "seq, ts, type, sender, sender_key, text, recipient, recipient_key, extra"
_WIDTH = len(_INSERTED.split(", "))  # parameters a row, in `_params`'s order
_INSERT_ROWS = {
    size: f"INSERT INTO entries ({_INSERTED}) VALUES "
    + ", ".join(["(" + ", ".join(["?"] * _WIDTH) + ")"] * size)
    for size in _CHUNKS
}


def one_statement(rows: int) -> bool:
    """Whether `insert` stores this many rows in one statement."""
    return rows in _INSERT_ROWS


def insert(conn: sqlite3.Connection, entries: Sequence[StoredEntry]) -> None:
    """Insert `entries` in statements of _CHUNKS sizes, the largest first."""
    params = _params(entries)
    start = 0
    while start < len(entries):
        size = min(_CHUNKS[-1], 1 << ((len(entries) - start).bit_length() - 1))
        conn.execute(_INSERT_ROWS[size], params[start * _WIDTH : (start + size) * _WIDTH])
        start += size


# The newest seq given out: the newest entry's, or a higher one kept in meta (a prune records
# the newest entry's there before it deletes anything).
LAST_SEQ = (
    "SELECT max((SELECT value FROM meta WHERE key = 'last_seq'), "
    "coalesce((SELECT max(seq) FROM entries), 0))"
)
# After message :seq, in the room's order (see history.py's docstring).
AFTER = "(seq > :seq OR (seq = :seq AND type != 'message'))"
# A private entry is visible to its two parties; :key is NULL for "nobody in particular".
VISIBLE = "(recipient_key IS NULL OR :key IN (sender_key, recipient_key))"


def entry_of(row: tuple[Any, ...]) -> StoredEntry:
    """The entry a row of COLUMNS holds."""
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


def _params(entries: Sequence[StoredEntry]) -> list[Any]:
    """Every entry's row, one after another: the multi-row INSERTs' parameters.

    One pass, not a tuple a row flattened after: it runs for every entry ever stored (0.44 µs
    a row against 0.79 on the test VM).
    """
    params: list[Any] = []
    add = params.extend
    for seq, ts, kind, sender, text, recipient, extra in entries:
        add(
            (
                seq,
                ts,
                kind,
                sender,
                name_key(sender),
                text,
                recipient,
                None if recipient is None else name_key(recipient),
                None if extra is None else json.dumps(extra, ensure_ascii=False),
            )
        )
    return params


def ban_of(row: tuple[Any, ...]) -> BanEntry:
    """The ban a row of the bans table holds (its first five columns)."""
    address, name, until, reason, by = row
    return BanEntry(address, name, until, reason, by)


def apply_ban(conn: sqlite3.Connection, ban: BanEntry | None, address: str, now: float) -> None:
    # Deleted first, so a ban set again moves to the end of the order, as in `Moderation`.
    conn.execute("DELETE FROM bans WHERE address = ?", (address,))
    if ban is not None:
        conn.execute(
            "INSERT INTO bans VALUES (?, ?, ?, ?, ?, ?)",
            (address, ban.name, ban.until, ban.reason, ban.by, now),
        )


def key_or_none(name: str | None) -> str | None:
    """`name`'s key, as the `*_key` columns hold it and `:key` matches it."""
    return None if name is None else name_key(name)
