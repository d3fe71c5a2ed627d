"""The other servers' members as their entries tell this server: who is there, away, an
operator, through joins, renames and leaves; what `who` and the welcome's list read."""

from __future__ import annotations

from multichat.protocol.names import name_key
from multichat.server.history_entries import (
    AWAY,
    BACK,
    JOIN,
    LEAVE,
    MODERATE,
    NICK,
    StoredEntry,
)
from multichat.server.limits import Limits
from multichat.server.remote_members import track, track_operators
from multichat.server.room import Room


def entry(kind: str, sender: str, text: str = "", target: str | None = None) -> StoredEntry:
    extra = None if target is None else {"target": target}
    return StoredEntry(0, 1.0, kind, sender, text, None, extra)


def test_joins_away_back_and_leaves_keep_the_room_current() -> None:
    room = Room("r", limits=Limits())
    assert track(room, entry(JOIN, "Alice")) is None
    track(room, entry(JOIN, "bob"))
    alice, bob = name_key("Alice"), name_key("bob")  # (look-alikes share a key)
    assert room.remote == {alice: "Alice", bob: "bob"}
    assert room.names() == ("Alice", "bob")
    track(room, entry(AWAY, "Alice", "lunch"))
    assert room.remote_away == {alice: "lunch"}
    track(room, entry(BACK, "Alice"))
    assert room.remote_away == {}
    track(room, entry(AWAY, "bob", "out"))
    track_operators(room, entry(MODERATE, "host", "op", target="bob"))
    assert room.remote_ops == {bob}
    track(room, entry(LEAVE, "bob", "quit"))
    assert (room.remote, room.remote_away, room.remote_ops) == ({alice: "Alice"}, {}, set())


def test_a_rename_moves_the_name_its_away_and_its_operator_in_place() -> None:
    room = Room("r", limits=Limits())
    for name in ("alice", "bob", "carol"):
        track(room, entry(JOIN, name))
    track(room, entry(AWAY, "bob", "brb"))
    track_operators(room, entry(MODERATE, "host", "op", target="bob"))
    robert = name_key("Robert")
    assert track(room, entry(NICK, "bob", "Robert")) == (name_key("bob"), robert)
    assert room.names() == ("alice", "Robert", "carol")  # where bob was, not at the end
    assert room.remote_away == {robert: "brb"}
    assert room.remote_ops == {robert}


def test_only_op_and_deop_of_a_name_change_the_operators() -> None:
    room = Room("r", limits=Limits())
    track_operators(room, entry(MODERATE, "host", "op", target="dave"))
    track_operators(room, entry(MODERATE, "host", "kick", target="erin"))
    track_operators(room, entry(MODERATE, "host", "op"))  # damaged: no target
    assert room.remote_ops == {name_key("dave")}
    track_operators(room, entry(MODERATE, "host", "deop", target="Dave"))
    assert room.remote_ops == set()
