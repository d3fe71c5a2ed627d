"""The room beside the messages, kept from the room's events alone (roster.py)."""

from __future__ import annotations

from multichat.client.roster import Roster
from multichat.protocol.events import (
    CameBack,
    Join,
    Leave,
    Members,
    Message,
    Renamed,
    Topic,
    Welcome,
    WentAway,
)


def joined() -> Roster:
    roster = Roster("alice")
    roster.welcomed(Welcome("Alice", "friends", ("bob", "Alice"), topic="films", seq=7))
    return roster


def test_a_welcome_gives_our_name_as_the_room_has_it_the_room_and_who_is_there() -> None:
    roster = joined()
    assert (roster.name, roster.room, roster.members) == ("Alice", "friends", ["bob", "Alice"])
    assert (roster.topic, roster.welcome_seq) == ("films", 7)
    assert roster.welcome_now() == Welcome(
        "Alice", "friends", ("bob", "Alice"), topic="films", seq=7
    )


def test_joins_leaves_renames_away_and_the_topic_are_followed() -> None:
    roster = joined()
    roster.listed(Members(("bob", "Alice"), away=(("bob", "lunch"),), ops=("bob",)))
    roster.follow(Join("carol", 1.0))
    roster.follow(Join("carol", 2.0))  # said twice (a replay): listed once
    roster.follow(Renamed("bob", "rob", 3.0))  # away and operator go with the name
    assert roster.members == ["rob", "Alice", "carol"]
    assert (roster.away, roster.ops) == ({"rob": "lunch"}, {"rob"})
    roster.follow(Renamed("Alice", "Alicia", 4.0))  # ours: a rejoin asks for the new one
    roster.follow(WentAway("carol", ""))
    roster.follow(CameBack("rob"))
    roster.follow(Topic("games", "rob"))
    roster.follow(Message(8, 5.0, "rob", "hi"))  # not the roster's concern
    assert (roster.name, roster.members) == ("Alicia", ["rob", "Alicia", "carol"])
    assert (roster.away, roster.topic) == ({"carol": ""}, "games")
    roster.follow(Leave("rob", "quit", 6.0))
    roster.follow(Leave("dave", "quit", 7.0))  # never listed: nothing to take away
    assert (roster.members, roster.ops) == (["Alicia", "carol"], set())
    assert roster.welcome_now().members == ("Alicia", "carol")


def test_moving_to_another_room_forgets_the_last_ones_away_and_operators() -> None:
    roster = joined()
    roster.listed(Members(("bob", "Alice"), away=(("bob", "lunch"),), ops=("bob",)))
    roster.welcomed(Welcome("Alice", "games", ("Alice",), seq=2), moved=True)
    assert (roster.room, roster.members, roster.away, roster.ops) == ("games", ["Alice"], {}, set())
    assert (roster.topic, roster.welcome_seq) == ("", 2)
