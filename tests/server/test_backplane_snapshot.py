"""The snapshot script's reply, decoded: members in the order they joined, bans, mutes and the
lock, what has run out set apart, and a damaged room as one line. (Over a real Redis, the
script's side is test_backplane.py's.)"""

from __future__ import annotations

import json

import pytest

from multichat.protocol.events import BanEntry
from multichat.server.backplane_codec import encode_topic
from multichat.server.backplane_errors import BackplaneError
from multichat.server.backplane_snapshot import decode_snapshot

NOW = 1_800_000_000.0


def member(name: str, since: str) -> str:
    return json.dumps({"name": name, "node": "n1", "token": f"t-{name}", "since": since})


def reply(meta: dict[str, str], members: dict[str, str] | None = None) -> list[object]:
    """As the script answers: entries, members (flat pairs), seq, sub, topic, meta (flat)."""
    flat_members = [x for pair in (members or {}).items() for x in pair]
    flat_meta = [x for pair in meta.items() for x in pair]
    return [[], flat_members, 7, 2, encode_topic("plans", "alice"), flat_meta]


def test_members_come_in_the_order_they_joined_and_the_room_where_it_stands() -> None:
    snapshot, expired = decode_snapshot(
        "den",
        reply({}, {"bob": member("bob", "5-0"), "alice": member("alice", "3-1")}),
        NOW,
    )
    assert [m.name for m in snapshot.members] == ["alice", "bob"]
    assert (snapshot.seq, snapshot.position) == (7, "7-2")
    assert (snapshot.topic, snapshot.topic_by) == ("plans", "alice")
    assert (snapshot.bans, snapshot.locked, snapshot.mutes, expired) == ([], False, {}, [])


def test_moderation_in_force_is_kept_and_what_has_run_out_is_set_apart() -> None:
    ban = json.dumps({"until": None, "reason": "spam", "by": "host", "name": "eve"})
    old_ban = json.dumps({"until": NOW - 1, "reason": "", "by": "host", "name": ""})
    mute = json.dumps({"until": NOW + 60})
    old_mute = json.dumps({"until": NOW})
    meta = {
        "ban:203.0.113.9": ban,
        "ban:198.51.100.1": old_ban,
        "mute:carol": mute,
        "mute:dave": old_mute,
        "locked": "1",
        "topic": "(not moderation)",
    }
    snapshot, expired = decode_snapshot("den", reply(meta), NOW)
    assert BanEntry("203.0.113.9", "eve", None, "spam", "host") in snapshot.bans
    assert snapshot.locked
    assert snapshot.mutes["carol"] == NOW + 60
    # Run out: no longer in force on any server, and handed back to be deleted from Redis.
    assert expired == ["ban:198.51.100.1", old_ban, "mute:dave", old_mute]


def test_damaged_moderation_is_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    snapshot, _ = decode_snapshot(
        "den", reply({"ban:203.0.113.9": "{not json", "locked": "1"}), NOW
    )
    assert snapshot.bans == [] and snapshot.locked
    assert "skipped damaged moderation" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        "not a list",
        [[], [], 7, 2, "", []][:5],  # a field short
        [[], ["bob", "{"], 7, 2, "", []],  # a member's record
        [[], [], 7, 2, '["only the text"]', []],  # the topic
    ],
)
def test_a_damaged_room_is_one_line_naming_it(damage: object) -> None:
    with pytest.raises(BackplaneError) as raised:
        decode_snapshot("den", damage, NOW)
    message = str(raised.value)
    assert message.startswith("room 'den' is damaged in the backplane") and "\n" not in message
