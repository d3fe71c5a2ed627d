"""The terminal interface, rendered to urwid canvases: the pane, the status line, scroll-back."""

from __future__ import annotations

import urwid

from multichat.client.address import Address
from multichat.client.connection import ChatClient
from multichat.client.tui import ChatScreen
from multichat.client.tui_widgets import NAME_COLOURS, PALETTE, name_attr
from multichat.client.updates import Ending, Joined, Lost, NotSent
from multichat.protocol.events import (
    BanEntry,
    BanList,
    CameBack,
    Error,
    Join,
    Leave,
    ListRooms,
    Members,
    Message,
    Notice,
    Renamed,
    RoomInfo,
    RoomList,
    Shutdown,
    Topic,
    Welcome,
    WentAway,
    Who,
)
from multichat.protocol.textmode import clock

SIZE = (60, 10)
TS = 1_700_000_000.0


def make_screen(members: tuple[str, ...] = ("alice", "bob")) -> ChatScreen:
    client = ChatClient(Address("0.tcp.ngrok.io", 12345), "alice", "pw", lambda e: None)
    client.roster.room = "friends"
    client.roster.members = list(members)
    client.state = "connected"
    screen = ChatScreen(client)
    client.listener = screen.on_event
    return screen


def lines(widget: urwid.Widget, size: tuple[int, int] = SIZE) -> list[str]:
    canvas = widget.render(size, focus=True)
    return [row.decode("utf-8").rstrip() for row in canvas.text]


def attr_of(widget: urwid.Widget, needle: str, size: tuple[int, int] = SIZE) -> object:
    """The display attribute of the first segment that contains `needle` (its innermost layer)."""
    canvas = widget.render(size, focus=True)
    for row in canvas.content():
        for attr, _, data in row:
            if needle.encode("utf-8") in data:
                return attr.layers[0] if isinstance(attr, urwid.util.LayeredAttr) else attr
    raise AssertionError(f"{needle!r} not on screen: {lines(widget, size)}")


def squeeze(text: str) -> str:
    return " ".join(text.split())


def message(sender: str, text: str, seq: int = 1, id: str | None = None) -> Message:
    return Message(seq, TS, sender, text, id)


def test_layout_pane_status_and_input() -> None:
    screen = make_screen()
    screen.on_event(Joined(Welcome("alice", "friends", ("alice", "bob"))))
    screen.on_event(message("bob", "hello"))
    shown = lines(screen)
    assert len(shown) == SIZE[1]
    assert shown[0].endswith("Welcome to friends, alice! Online: alice, bob")
    assert f"{clock(TS)} bob: hello" in shown
    assert shown[-2].startswith(" friends · 0.tcp.ngrok.io:12345 · 2 online")
    assert shown[-2].endswith("connected")
    assert shown[-1] == "alice>"
    assert attr_of(screen, "friends ·") == "status"


def test_every_line_has_a_timestamp_and_names_a_stable_colour() -> None:
    screen = make_screen()
    screen.on_event(message("bob", "one"))
    screen.on_event(message("carol", "two", 2))
    screen.on_event(Join("dave", TS))
    for row in lines(screen)[:3]:
        assert row.startswith(clock(TS) + " ")
    assert attr_of(screen, "bob") == name_attr("bob")
    assert attr_of(screen, "carol") == name_attr("carol")
    assert attr_of(screen, clock(TS)) == "ts"
    assert name_attr("Bob") == name_attr("bob")  # the room treats them as one name
    assert {name_attr(f"user{i}") for i in range(200)} == {
        f"name{i}" for i in range(len(NAME_COLOURS))
    }
    palette_names = {entry[0] for entry in PALETTE}
    assert {name_attr("bob"), "ts", "join", "leave", "system", "shutdown"} <= palette_names


def test_own_line_is_pending_until_the_echo() -> None:
    screen = make_screen()
    screen.input.set_edit_text("on my way")
    screen.keypress(SIZE, "enter")
    assert screen.input.edit_text == ""
    assert "alice: on my way …" in " ".join(lines(screen))
    assert attr_of(screen, "on my way") == "pending"
    (line,) = screen.client.outbox
    screen.on_event(message("alice", "on my way", id=line.id))
    shown = " ".join(lines(screen))
    assert "alice: on my way ✓" in shown and "…" not in shown
    assert attr_of(screen, "✓") == "sent"
    assert attr_of(screen, "alice") == "me"
    assert shown.count("on my way") == 1


def test_refused_line_is_marked() -> None:
    screen = make_screen()
    screen.input.set_edit_text("x" * 20)
    screen.keypress(SIZE, "enter")
    (line,) = screen.client.outbox
    screen.on_event(NotSent(line, Error("too_long", "message too long")))
    assert "(not sent: message too long)" in " ".join(lines(screen, (80, 10)))
    assert attr_of(screen, "not sent", (80, 10)) == "failed"


def test_join_leave_system_and_shutdown_styles() -> None:
    screen = make_screen()
    screen.on_event(Join("carol", TS))
    screen.on_event(Leave("carol", "quit", TS))
    screen.on_event(Members(("alice", "bob")))
    screen.on_event(Error("empty", "empty message"))
    screen.on_event(Shutdown("back tomorrow"))
    shown = lines(screen)
    assert shown[0].endswith("→ carol joined")
    assert shown[1].endswith("← carol left (quit)")
    assert shown[2].endswith("Online (2): alice, bob")
    assert shown[4].endswith("The room is closing: back tomorrow")
    assert attr_of(screen, "carol joined") == "join"
    assert attr_of(screen, "carol left") == "leave"
    assert attr_of(screen, "Online (2)") == "system"
    assert attr_of(screen, "empty message") == "error"
    assert attr_of(screen, "The room is closing") == "shutdown"
    assert screen.client.roster.members == ["alice", "bob"]


def test_nothing_from_the_network_reaches_the_screen_raw() -> None:
    screen = make_screen()
    evil = "\x1b]0;owned\x07\x1b[2J\rhidden\u202eexe.png\x9b31m"
    screen.on_event(message("bob\x1b[31m", evil))
    screen.on_event(Join("eve\r\x1b[H", TS))
    screen.on_event(Shutdown("bye\x1b[?1049l"))
    canvas = screen.render(SIZE, focus=True)
    for row in canvas.text:
        for bad in (b"\x1b", b"\r", b"\x07", "\u202e".encode(), "\x9b".encode()):
            assert bad not in row
    assert "]0;owned[2J" in " ".join(lines(screen))  # the harmless rest stays visible


def test_scroll_back_is_not_yanked_by_new_messages() -> None:
    screen = make_screen()
    for n in range(30):
        screen.on_event(message("bob", f"line {n}", n + 1))
    assert lines(screen)[7].endswith("line 29")
    screen.keypress(SIZE, "page up")
    before = lines(screen)[:8]
    assert not any(row.endswith("line 29") for row in before)
    screen.on_event(message("bob", "new one", 31))
    screen.on_event(message("bob", "new two", 32))
    after = lines(screen)
    assert after[:8] == before
    assert squeeze(after[-2]).endswith("2 new messages (PageDown) connected")
    assert attr_of(screen, "2 new messages") == "unread"
    for _ in range(10):
        screen.keypress(SIZE, "page down")
    shown = lines(screen)
    assert shown[7].endswith("new two")
    assert "new message" not in shown[-2]
    screen.on_event(message("bob", "follows again", 33))
    assert lines(screen)[7].endswith("follows again")


def test_sending_jumps_to_the_latest() -> None:
    screen = make_screen()
    for n in range(30):
        screen.on_event(message("bob", f"line {n}", n + 1))
    lines(screen)
    screen.keypress(SIZE, "page up")
    screen.input.set_edit_text("me too")
    screen.keypress(SIZE, "enter")
    assert lines(screen)[7].endswith("alice: me too …")


def test_status_line_while_reconnecting_and_after_the_end() -> None:
    screen = make_screen()
    screen.client.state = "reconnecting"
    screen.on_event(Lost("the server closed the connection", 2, 8, 1.0))
    screen.client.say_nowait("queued")
    screen.refresh_status()
    status = lines(screen, (80, 10))[-2]
    assert status.startswith(" friends · 0.tcp.ngrok.io:12345 ")
    assert "online" not in status
    assert squeeze(status).endswith("1 waiting · connection lost, reconnecting 2/8")
    assert attr_of(screen, "reconnecting 2/8", (80, 10)) == "status warn"
    screen.show_ending(Ending("shutdown", "bye"))
    assert lines(screen, (80, 10))[-2].endswith("room closed - press a key")
    assert attr_of(screen, "room closed", (80, 10)) == "status bad"


def test_resize_keeps_the_status_readable() -> None:
    screen = make_screen()
    screen.on_event(message("bob", "a long message that wraps " * 4))
    wide = lines(screen, (100, 12))
    narrow = lines(screen, (30, 12))
    assert sum("wraps" in row for row in narrow) > sum("wraps" in row for row in wide)
    assert all(len(row) <= 30 for row in narrow)
    assert narrow[-2].endswith("connected")
    assert narrow[-1] == "alice>"
    # A reader at the bottom stays there when the window shrinks.
    screen.on_event(message("bob", "first\nsecond\nthird", 2))
    lines(screen, (60, 12))
    small = lines(screen, (30, 6))
    assert small[1:4] == [f"{clock(TS)} bob: first", "      second", "      third"]
    # Continuation lines stay clear of the timestamp column.
    continuation = [row for row in narrow[:-2] if row and not row.startswith(clock(TS))]
    assert continuation and all(row.startswith("      ") for row in continuation)


def test_history_up_and_down() -> None:
    screen = make_screen()
    for text in ("first", "second"):
        screen.input.set_edit_text(text)
        screen.keypress(SIZE, "enter")
    screen.input.set_edit_text("draft")
    screen.keypress(SIZE, "up")
    assert screen.input.edit_text == "second"
    screen.keypress(SIZE, "up")
    screen.keypress(SIZE, "up")
    assert screen.input.edit_text == "first"
    screen.keypress(SIZE, "down")
    screen.keypress(SIZE, "down")
    assert screen.input.edit_text == "draft"


def test_commands() -> None:
    screen = make_screen()
    screen.input.set_edit_text("/who")
    screen.keypress(SIZE, "enter")
    assert screen.client._control == [Who()]
    screen.input.set_edit_text("/help")
    screen.keypress(SIZE, "enter")
    shown = " ".join(lines(screen, (80, 40)))
    assert "/who" in shown and "/quit or tata" in shown and "PageUp" in shown
    assert "/msg NAME TEXT" in shown and "/kick NAME [REASON]" in shown and "Tab" in shown
    assert screen.client._control == [Who()], "/help is answered here, not by the room"
    screen.input.set_edit_text("/dance")
    screen.keypress(SIZE, "enter")
    assert "unknown command /dance; /help lists them" in " ".join(lines(screen, (80, 20)))
    assert attr_of(screen, "unknown command", (80, 20)) == "error"
    screen.input.set_edit_text("/kick")
    screen.keypress(SIZE, "enter")
    assert "usage: /kick NAME [REASON]" in " ".join(lines(screen, (80, 20)))
    assert screen.client._control == [Who()]
    screen.input.set_edit_text("//slash")
    screen.keypress(SIZE, "enter")
    assert [line.text for line in screen.client.outbox] == ["/slash"]
    assert not screen.client._quitting
    screen.input.set_edit_text("TATA")
    screen.keypress(SIZE, "enter")
    assert screen.client._quitting


def test_ctrl_c_leaves() -> None:
    screen = make_screen()
    screen.keypress(SIZE, "ctrl c")
    assert screen.client._quitting


def test_pasted_lines_are_one_message() -> None:
    screen = make_screen()
    for key in ["begin paste", "a", "enter", "b", "end paste"]:
        screen.keypress(SIZE, key)
    assert screen.input.edit_text == "a\nb"
    screen.keypress(SIZE, "enter")
    assert [line.text for line in screen.client.outbox] == ["a\nb"]


def test_too_long_stays_in_the_input_line() -> None:
    screen = make_screen()
    screen.input.set_edit_text("y" * 4001)
    screen.keypress(SIZE, "enter")
    assert screen.input.edit_text == "y" * 4001
    assert not screen.client.outbox
    shown = lines(screen, (80, 10))
    assert "Too long to send (4001 characters; at most 4000)" in " ".join(shown)
    # The input scrolls within five rows, its end (the cursor) in view; the status stays.
    assert shown[-6].startswith(" friends")
    assert shown[-1] == "y" * (4001 + len("alice> ") - 80 * 50)
    assert screen.get_cursor_coords((80, 10)) == (len(shown[-1]), 9)


# -- what issue 13 added: mentions, Tab, and the chat's other events --


class Bell:
    def __init__(self) -> None:
        self.rings = 0

    def __call__(self) -> None:
        self.rings += 1


def ringing_screen(
    name: str = "alice", members: tuple[str, ...] = ("alice", "bob")
) -> tuple[ChatScreen, Bell]:
    bell = Bell()
    client = ChatClient(Address("0.tcp.ngrok.io", 12345), name, "pw", lambda e: None)
    client.roster.room = "friends"
    client.roster.members = list(members)
    client.state = "connected"
    screen = ChatScreen(client, bell=bell)
    client.listener = screen.on_event
    return screen, bell


def test_a_mention_is_highlighted_and_rings_the_bell_once() -> None:
    screen, bell = ringing_screen()
    screen.on_event(message("bob", "no one in particular"))
    assert bell.rings == 0
    screen.on_event(message("bob", "hey ALICE, look", 2))
    assert bell.rings == 1
    assert attr_of(screen, "hey ALICE, look") == "mention"
    assert attr_of(screen, "no one in particular") != "mention"
    # As names compare: width and look-alikes too (fullwidth; a Cyrillic capital A).
    screen.on_event(message("bob", "\uff41\uff4c\uff49\uff43\uff45?", 3))
    screen.on_event(message("bob", "@\u0410lice: lunch", 4))
    assert bell.rings == 3
    # Not inside another word, and never for our own lines.
    screen.on_event(message("bob", "with malice", 5))
    screen.on_event(message("alice", "alice here", 6))
    assert bell.rings == 3
    assert attr_of(screen, "with malice") != "mention"


def test_a_name_with_a_space_is_mentioned_as_its_words() -> None:
    screen, bell = ringing_screen("Ann B", ("Ann B", "bob"))
    screen.on_event(message("bob", "thanks ann b!"))
    screen.on_event(message("bob", "annb, too"))
    screen.on_event(message("bob", "ann, not you", 3))
    assert bell.rings == 2


def test_without_a_bell_a_mention_is_still_highlighted() -> None:
    screen = make_screen()  # ChatScreen(client): no bell, as with --no-bell
    screen.on_event(message("bob", "alice?"))
    assert attr_of(screen, "alice?") == "mention"


def test_private_messages_and_actions_have_their_own_look() -> None:
    screen, bell = ringing_screen()
    screen.on_event(Message(1, TS, "bob", "psst", to="alice"))
    assert bell.rings == 1, "a private message to me rings too"
    assert attr_of(screen, "psst") == "mention"
    screen.on_event(Message(2, TS, "bob", "waves", action=True))
    shown = lines(screen)
    assert shown[0].endswith("bob ▸ alice: psst")
    assert shown[1].endswith("* bob waves")
    assert attr_of(screen, "waves") == "action"
    screen.input.set_edit_text("/msg bob see you at 8")
    screen.keypress(SIZE, "enter")
    (line,) = screen.client.outbox
    assert (line.text, line.to, line.action) == ("see you at 8", "bob", False)
    assert lines(screen)[2].endswith("alice ▸ bob: see you at 8 …")
    screen.on_event(Message(3, TS, "alice", "see you at 8", line.id, "bob"))
    assert lines(screen)[2].endswith("alice ▸ bob: see you at 8 ✓")
    assert attr_of(screen, "see you at 8") == "private"
    screen.input.set_edit_text("/me dances")
    screen.keypress(SIZE, "enter")
    *_, action = screen.client.outbox
    assert (action.text, action.to, action.action) == ("dances", None, True)
    assert lines(screen)[3].endswith("* alice dances …")
    assert bell.rings == 1


def test_a_muted_line_is_marked_not_sent() -> None:
    screen = make_screen()
    screen.input.set_edit_text("/me objects")
    screen.keypress(SIZE, "enter")
    (line,) = screen.client.outbox
    screen.on_event(NotSent(line, Error("muted", "you are muted")))
    assert "* alice objects  (not sent: you are muted)" in lines(screen, (80, 10))[0]
    assert attr_of(screen, "objects", (80, 10)) == "failed"


def test_renames_away_topic_notices_and_bans() -> None:
    screen = make_screen()
    client = screen.client
    client._handle(Renamed("bob", "rob", TS))
    client._handle(Renamed("alice", "alicia", TS))
    assert client.roster.name == "alicia" and client.roster.members == ["alicia", "rob"]
    assert lines(screen)[-1] == "alicia>"
    client._handle(WentAway("rob", "lunch"))
    client._handle(CameBack("rob"))
    client._handle(WentAway("alicia", ""))
    client._handle(Topic("movie night at 8", "rob"))
    client._handle(Notice("host muted rob for 10m", TS))
    client._handle(Members(("alicia", "rob"), (("alicia", ""),), ("rob",)))
    client._handle(BanList((BanEntry("203.0.113.5", "mallory", None, "spam", "host"),)))
    client._handle(BanList(()))
    shown = lines(screen, (80, 16))
    assert shown[0] == " Topic: movie night at 8"
    assert attr_of(screen, "Topic: movie", (80, 16)) == "topic"
    pane = [row[len(clock(TS)) + 1 :] for row in shown[1:-2] if row]
    assert pane == [
        "bob is now known as rob",
        "alice is now known as alicia",
        "rob is away: lunch",
        "rob is back",
        "alicia is away",
        "rob set the topic: movie night at 8",
        "host muted rob for 10m",
        "Online (2): alicia (away), rob (op)",
        "Bans (1):",
        "  mallory (203.0.113.5) by host - spam",
        "No bans.",
    ]
    assert attr_of(screen, "host muted", (80, 16)) == "notice"
    assert "you are away (/back)" in shown[-2]
    client._handle(Topic("", "rob"))
    assert not lines(screen, (80, 16))[0].startswith(" Topic"), "no topic, no header line"


def test_kicked_is_said_once() -> None:
    screen = make_screen()
    screen.on_event(Error("kicked", "you were kicked by host: rude"))
    screen.show_ending(Ending("kicked", "you were kicked by host: rude"))
    assert " ".join(lines(screen, (80, 10))).count("you were kicked by host: rude") == 1
    assert lines(screen, (80, 10))[-2].endswith("disconnected - press a key")


def tab(screen: ChatScreen, typed: str) -> str:
    screen.input.set_edit_text(typed)
    screen.input.set_edit_pos(len(typed))
    screen.keypress(SIZE, "tab")
    return str(screen.input.edit_text)


def test_tab_completes_member_names_and_commands() -> None:
    screen = make_screen(("alice", "bob", "Bobby", "Ann B"))
    assert tab(screen, "BO") == "bob: "  # at the start of a line: addressed to them
    screen.keypress(SIZE, "tab")
    assert screen.input.edit_text == "Bobby: "  # again: the next one
    screen.keypress(SIZE, "tab")
    assert screen.input.edit_text == "bob: "
    assert tab(screen, "thanks an") == "thanks Ann B "
    assert tab(screen, "/msg ann") == '/msg "Ann B" '  # as /msg reads a name with a space
    assert tab(screen, "/ki") == "/kick "
    assert tab(screen, "hi al") == "hi al", "not my own name"
    assert tab(screen, "hi zed") == "hi zed"
    assert screen.input.edit_pos == len("hi zed")
    # Typing something else ends the cycle: Tab then starts from what is typed.
    assert tab(screen, "b") == "bob: "
    for key in "hi bo":
        screen.keypress(SIZE, key)
    screen.keypress(SIZE, "tab")
    assert screen.input.edit_text == "bob: hi bob "


def test_a_mention_in_the_history_shown_on_joining_rings_nothing() -> None:
    bell = Bell()
    client = ChatClient(Address("0.tcp.ngrok.io", 12345), "alice", "pw", lambda e: None)
    client._joined(Welcome("alice", "friends", ("alice", "bob"), seq=5))
    screen = ChatScreen(client, bell=bell)
    screen.on_event(message("bob", "where is alice?", seq=5))
    assert attr_of(screen, "where is alice?") == "mention"
    assert bell.rings == 0
    screen.on_event(message("bob", "alice, there you are", seq=6))
    assert bell.rings == 1


def test_tab_after_join_asks_for_the_rooms_then_completes_them() -> None:
    screen, _ = ringing_screen()
    assert tab(screen, "/join g") == "/join g"  # no list yet: Tab asks for one...
    assert screen.client._control == [ListRooms()]
    screen.on_event(RoomList((RoomInfo("friends", 1), RoomInfo("Games", 2), RoomInfo("go", 0))))
    assert tab(screen, "/join g") == "/join Games"  # ...and completes once it is shown
    screen.keypress(SIZE, "tab")
    assert screen.input.edit_text == "/join go"
    assert tab(screen, "/j FR") == "/j friends"
    assert tab(screen, "/join x") == "/join x"
    assert screen.client._control == [ListRooms()], "asked once: the list is known"


def test_rooms_are_listed_and_a_move_shows_the_new_room() -> None:
    bell = Bell()
    client = ChatClient(Address("0.tcp.ngrok.io", 12345), "alice", "pw", lambda e: None)
    client._joined(Welcome("alice", "friends", ("alice",), seq=1))
    screen = ChatScreen(client, bell=bell)
    screen.on_event(RoomList((RoomInfo("friends", 1), RoomInfo("games", 2, "chess\x1b[2J"))))
    shown = "\n".join(lines(screen, (60, 12)))
    assert "Rooms (2):" in shown
    assert "friends (you are here), 1 online" in shown
    assert "games, 2 online: chess[2J" in shown
    client._joined(Welcome("alice", "games", ("bob", "alice"), seq=9))
    screen.on_event(Joined(client.roster.welcome_now(), moved=True))
    screen.on_event(message("bob", "alice, you missed it", seq=9))  # history: no bell
    shown = "\n".join(lines(screen, (60, 12)))
    assert "Welcome to games, alice! Online: bob, alice" in shown
    assert shown.splitlines()[-2].startswith(" games ·")
    assert bell.rings == 0
    screen.on_event(message("bob", "alice, now", seq=10))
    assert bell.rings == 1
