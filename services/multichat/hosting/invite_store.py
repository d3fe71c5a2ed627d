"""The room's personal invites on disk, so they survive a restart (`invites.json`).

What is kept is what the room's `InviteBook` keeps: each invite's id, name, uses left, expiry
and the SHA-256 digest of its token, never the token. The file is rewritten whole (mode 0600,
atomically) on every change: a host's `invite` or `revoke`, a friend's first login. Those are
rare and the file is small, so a synchronous write is simpler than a writer task, and a crash
right after a change loses nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..protocol.events import Invite
from ..server.invites import MAX_INVITES, InviteBook, StoredInvite
from .privatefile import write_private

log = logging.getLogger("multichat")

INVITES_FILE = "invites.json"
FORMAT_VERSION = 1
# A thousand invites (the book's cap) are about 200 KB; a larger file is not ours.
MAX_INVITES_BYTES = 4 * 1024 * 1024


class InviteStoreError(Exception):
    """The invites file cannot be read; the message is one line, for the host."""


def encode(invites: list[StoredInvite]) -> bytes:
    entries = [
        {
            "id": stored.invite.id,
            "name": stored.invite.name,
            "uses": stored.invite.uses,
            "expires": stored.invite.expires,
            "digest": stored.digest,
        }
        for stored in invites
    ]
    return json.dumps({"version": FORMAT_VERSION, "invites": entries}, indent=1).encode()


def decode(data: bytes, now: float) -> list[StoredInvite]:
    """The live invites in `data`; raises ValueError (or KeyError, TypeError) if it is not ours."""
    document: Any = json.loads(data)
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError("not a multichat invites file of a known version")
    kept = []
    for entry in document["invites"][-MAX_INVITES:]:
        invite = Invite(
            id=str(entry["id"]),
            name=str(entry["name"]),
            uses=int(entry["uses"]),
            expires=float(entry["expires"]),
        )
        digest = str(entry["digest"])
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError("a digest is not SHA-256 hex")
        if invite.uses > 0 and invite.expires > now:  # the dead are not brought back
            kept.append(StoredInvite(invite, digest))
    return kept


def load(path: Path, now: float | None = None) -> list[StoredInvite]:
    """The invites kept in `path` that still work; none if there is no file yet.

    Raises InviteStoreError for a file that cannot be read or is not an invites file: the
    host decides what to do with it, rather than the room forgetting invites on its own.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_INVITES_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InviteStoreError(f"cannot read the invites file {path}: {exc.strerror}") from None
    if len(data) > MAX_INVITES_BYTES:
        raise InviteStoreError(f"the invites file {path} is too large to be one")
    try:
        return decode(data, time.time() if now is None else now)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InviteStoreError(
            f"the invites file {path} is damaged; move it away to start with no invites"
        ) from None


def save(path: Path, invites: list[StoredInvite]) -> None:
    """Write `invites` to `path` (0600, atomically). Raises OSError."""
    write_private(path, encode(invites))


def keep(book: InviteBook, directory: Path) -> int:
    """Restore `book` from `directory`'s invites file and save it there on every change.

    Returns how many invites were restored. Raises InviteStoreError.
    """
    path = directory / INVITES_FILE
    restored = load(path)
    book.restore(restored)

    def changed(invites: list[StoredInvite]) -> None:
        # Never let a full disk fail a login or a host's command: the invite still works in
        # this run; only a restart would forget it.
        try:
            save(path, invites)
        except OSError as exc:
            log.warning("cannot save the invites to %s: %s", path, exc.strerror or exc)

    book.on_change = changed
    return len(restored)
