"""A room as the backplane holds it, decoded: the snapshot a server opens the room with (its
newest entries, members, topic, bans, lock and mutes), and what a member resuming is replayed.
No I/O: backplane.py asks Redis, these say what the answers mean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..protocol.events import BanEntry
from .backplane_codec import (
    BAN_PREFIX,
    LOCKED_FIELD,
    MUTE_PREFIX,
    BackplaneEntry,
    CorruptEntry,
    RemoteMember,
    decode_ban,
    decode_member,
    decode_mute,
    decode_topic,
    member_order,
    stream_id,
)
from .backplane_errors import BackplaneError
from .backplane_reader import decode_script_entries, pairs, sequence

log = logging.getLogger("multichat.backplane")


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """A room at one moment: `on_entries` then delivers everything after `position`."""

    entries: list[BackplaneEntry]  # the newest ones asked for, oldest first
    members: list[RemoteMember]  # on every server, in the order they joined
    seq: int  # the newest message's number
    position: str  # the newest entry's stream ID ("0-0" while there is none)
    topic: str
    topic_by: str
    bans: list[BanEntry]  # the room's bans and lock, on every server (moderation.py)
    locked: bool
    mutes: dict[str, float | None]  # name key -> until when (wall clock; None: until lifted)


@dataclass(frozen=True, slots=True)
class Replay:
    """What a member resuming is sent: the newest entries after its seq, and how many messages
    in between it misses (beyond the limit, or gone from the stream)."""

    entries: list[BackplaneEntry]
    missed: int


def decode_snapshot(room: str, reply: object, now: float) -> tuple[RoomSnapshot, list[str]]:
    """The snapshot script's `reply` for `room`, and the fields and values (flat, as the
    expired script takes them) of its bans and mutes that have run out at `now`, which the
    snapshot leaves out. Raises BackplaneError for a room damaged in Redis."""
    try:
        raw_entries, raw_members, seq, sub, topic, raw_meta = sequence(reply, 6)
        members = [decode_member(k, v) for k, v in pairs(sequence(raw_members))]
        text, by = decode_topic(str(topic))
        meta = dict(pairs(sequence(raw_meta)))
    except (CorruptEntry, TypeError, ValueError) as exc:
        raise BackplaneError(f"room {room!r} is damaged in the backplane: {exc}") from None
    bans = []
    mutes: dict[str, float | None] = {}
    expired: list[str] = []  # fields and values of bans and mutes that have run out
    for field, value in meta.items():
        try:
            if field.startswith(BAN_PREFIX):
                ban = decode_ban(field.removeprefix(BAN_PREFIX), value)
                until = ban.until
                bans.append(ban)
            elif field.startswith(MUTE_PREFIX):
                key = field.removeprefix(MUTE_PREFIX)
                until = mutes[key] = decode_mute(key, value)
            else:
                continue
        except CorruptEntry as exc:
            log.warning("room %r: skipped damaged moderation in the backplane: %s", room, exc)
            continue
        if until is not None and until <= now:
            expired += [field, value]
    entries = decode_script_entries(raw_entries)
    position = stream_id(int(str(seq)), int(str(sub)))
    members.sort(key=member_order)
    locked = meta.get(LOCKED_FIELD) == "1"
    snapshot = RoomSnapshot(
        entries, members, int(str(seq)), position, text, by, bans, locked, mutes
    )
    return snapshot, expired
