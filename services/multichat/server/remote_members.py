"""The room's members on the other servers of a backplane, as their entries tell this server:
who is there, who of them is away, and who is an operator (`Room.remote`, `remote_away`,
`remote_ops`, which `who` and the welcome's list read). No I/O: relay.py feeds it entries.
"""

from __future__ import annotations

from ..protocol.names import key_of, name_key
from .history_entries import AWAY, BACK, JOIN, LEAVE, NICK, StoredEntry
from .room import Room

# The entries that change who is on the other servers, or whether they are away.
TRACKED = frozenset({JOIN, LEAVE, NICK, AWAY, BACK})


def track(room: Room, entry: StoredEntry) -> tuple[str, str] | None:
    """Keep `room.remote` (and who of them is away, or an operator) up to date with an entry
    from another server, one of the TRACKED kinds. A rename returns (old key, new key)."""
    kind = entry.type
    remote, away, ops = room.remote, room.remote_away, room.remote_ops
    key = name_key(entry.sender)
    if kind == JOIN:
        remote[key] = entry.sender
    elif kind == LEAVE:
        remote.pop(key, None)
        away.pop(key, None)
        ops.discard(key)
    elif kind == NICK:
        new = name_key(entry.text)
        room.remote = {
            (new if k == key else k): (entry.text if k == key else name)
            for k, name in remote.items()
        }
        if key in away:
            away[new] = away.pop(key)
        if key in ops:
            ops.discard(key)
            ops.add(new)
        return key, new
    elif kind == AWAY:
        away[key] = entry.text
    else:
        away.pop(key, None)  # back
    return None


def track_operators(room: Room, entry: StoredEntry) -> None:
    """An operator made or unmade on any server (a `moderate` entry), for `who` on every
    server."""
    target = (entry.extra or {}).get("target")
    if entry.text in ("op", "deop") and isinstance(target, str):
        key = key_of(target)
        if key is None:
            return
        if entry.text == "op":
            room.remote_ops.add(key)
        else:
            room.remote_ops.discard(key)
