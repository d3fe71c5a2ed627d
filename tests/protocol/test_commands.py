"""The typed-command grammar: what people type, the event it asks for, or the usage."""

from __future__ import annotations

import pytest

from multichat.protocol import wire
from multichat.protocol.commands import (
    CommandError,
    format_duration,
    moderation,
    parse,
    parse_duration,
    take_room,
)
from multichat.protocol.events import (
    Away,
    Back,
    BanEntry,
    BanList,
    CameBack,
    Event,
    Help,
    JoinRoom,
    ListRooms,
    Members,
    Message,
    Moderate,
    Nick,
    Notice,
    Quit,
    Renamed,
    RoomInfo,
    RoomList,
    Say,
    SetTopic,
    Topic,
    Welcome,
    WentAway,
    Who,
)
from multichat.protocol.textmode import parse_line, render


@pytest.mark.parametrize(
    ("typed", "event"),
    [
        ("/msg bob hi there", Say("hi there", to="bob")),
        ('/msg "Ann B" hi', Say("hi", to="Ann B")),
        ("/me waves", Say("waves", action=True)),
        ("/nick alicia", Nick("alicia")),
        ("/nick Ann B", Nick("Ann B")),
        ("/away lunch, back at 2", Away("lunch, back at 2")),
        ("/away", Away("")),
        ("/back", Back()),
        ("/topic plans for Saturday", SetTopic("plans for Saturday")),
        ("/who", Who()),
        ("/HELP", Help()),
        ("/quit", Quit("quit")),
        ("/kick bob being rude", Moderate("kick", "bob", "being rude")),
        ("/kick bob", Moderate("kick", "bob")),
        ("/ban bob --for 10m spam", Moderate("ban", "bob", "spam", 600.0)),
        ("/ban 203.0.113.5 --for=1h30m", Moderate("ban", "203.0.113.5", "", 5400.0)),
        ("/ban bob", Moderate("ban", "bob")),
        ("/unban 203.0.113.5", Moderate("unban", "203.0.113.5")),
        ("/mute bob --for 2h", Moderate("mute", "bob", "", 7200.0)),
        ("/unmute bob", Moderate("unmute", "bob")),
        ("/lock", Moderate("lock")),
        ("/unlock", Moderate("unlock")),
        ("/op carol", Moderate("op", "carol")),
        ("/deop carol", Moderate("deop", "carol")),
        ("/bans", Moderate("bans")),
        ("kick bob rude", Moderate("kick", "bob", "rude")),  # the host's console: no slash
        ("/rooms", ListRooms()),
        ("/list", ListRooms()),
        ("/join games", JoinRoom("games")),
        ('/join "board games"', JoinRoom("board games")),
        ("/join Board Games", JoinRoom("Board Games")),
    ],
)
def test_each_command_is_the_event_it_asks_for(typed: str, event: Event) -> None:
    assert parse(typed) == event


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("/msg bob", "usage: /msg NAME TEXT"),
        ("/msg", "usage: /msg NAME TEXT"),
        ("/me", "usage: /me TEXT"),
        ("/nick", "usage: /nick NAME"),
        ("/kick", "usage: /kick NAME"),
        ("/ban bob --for 10x", "'10x' is not a duration"),
        ("/ban bob --for", "--for needs a duration"),
        ("/mute bob --for 0s", "more than 0"),
        ("/mute bob --for 400d", "at most a year"),
        ("/op bob and more", "/op takes a name and nothing more"),
        ('/msg "Ann B hi', 'closing "'),
        ("/frobnicate", "unknown command /frobnicate; /help lists them"),
        ("/join", "usage: /join ROOM"),
        ('/join ""', "usage: /join ROOM"),
    ],
)
def test_a_command_that_does_not_parse_says_how_to_type_it(typed: str, says: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(typed)
    assert says in str(info.value)
    assert info.value.code == "bad_command"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) <= seconds


def test_the_host_words_arrive_whole() -> None:
    """`multichat ban "Ann B" --for 1d spam` sends its words as a list: a name keeps spaces."""
    assert moderation("ban", ["Ann B", "--for", "1d", "spam"]) == Moderate(
        "ban", "Ann B", "spam", 86400.0
    )
    with pytest.raises(CommandError):
        moderation("explode", ["bob"])


@pytest.mark.parametrize(
    "event",
    [
        Say("hi", 1, to="bob", action=True),
        Message(3, 1.0, "alice", "waves", None, None, True),
        Message(4, 1.0, "alice", "psst", "x", "bob"),
        Nick("alicia"),
        Renamed("alice", "alicia", 2.0),
        Away("lunch"),
        WentAway("bob", "lunch"),
        Back(),
        CameBack("bob"),
        SetTopic("plans"),
        Topic("plans", "alice"),
        Help(),
        Notice("alice muted bob", 3.0),
        Moderate("ban", "bob", "spam", 600.0),
        Moderate("kick", "bob", "rude"),
        Moderate("lock"),
        Moderate("bans"),
        BanList((BanEntry("203.0.113.5", "bob", None, "spam", "host"),)),
        Members(("alice", "bob"), (("bob", "lunch"),), ("alice",)),
        Welcome("alice", "room", ("alice",), topic="plans"),
        ListRooms(),
        JoinRoom("games"),
        RoomList((RoomInfo("den", 2, "plans"),)),
    ],
    ids=repr,
)
def test_every_new_event_round_trips(event: Event) -> None:
    assert wire.decode(wire.encode(event)[:-1]) == event


@pytest.mark.parametrize(
    ("words", "room", "rest"),
    [
        (["bob", "--room", "den", "rude"], "den", ["bob", "rude"]),
        (["--room=board games"], "board games", []),
        (["bob"], None, ["bob"]),
    ],
)
def test_a_host_command_may_name_its_room(
    words: list[str], room: str | None, rest: list[str]
) -> None:
    assert take_room(words) == room
    assert words == rest


def test_room_option_needs_a_name() -> None:
    with pytest.raises(CommandError, match="--room needs"):
        take_room(["lock", "--room"])


def test_help_lists_rooms_and_join() -> None:
    from multichat.protocol.commands import HELP

    assert ("/join ROOM", "move to another room") in HELP
    assert any(usage == "/rooms" for usage, _ in HELP)


def test_plain_text_members_type_the_same_commands() -> None:
    assert parse_line("/msg bob hi") == Say("hi", to="bob")
    assert parse_line("//not a command") == Say("/not a command")
    assert parse_line("tata") == Quit("quit")
    with pytest.raises(CommandError):
        parse_line("/nope")


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Message(1, 0.0, "alice", "waves", action=True), "* alice waves"),
        (Message(1, 0.0, "alice", "psst", to="bob"), "alice -> bob: psst"),
        (Renamed("alice", "alicia"), "* alice is now known as alicia"),
        (WentAway("bob", "lunch"), "* bob is away: lunch"),
        (CameBack("bob"), "* bob is back"),
        (Topic("plans", "alice"), "* alice set the topic: plans"),
        (Notice("host kicked bob (rude)"), "* host kicked bob (rude)"),
        (
            Members(("alice", "bob"), (("bob", "lunch"),), ("alice",)),
            "alice (op), bob (away: lunch)",
        ),
    ],
)
def test_plain_text_shows_each_event_on_one_line(event: Event, line: str) -> None:
    rendered = render(event).decode()
    assert line in rendered and rendered.count("\n") == 1
