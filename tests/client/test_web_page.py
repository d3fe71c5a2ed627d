"""The browser page, end to end: Debian's Chromium, the real `multichat serve`, real sockets.

Each test starts its own room in a subprocess and opens the page the room serves, under the
room's Content-Security-Policy (a page that breaks it fails the test, see `browser.open_tab`).
Members who use a terminal are raw JSON-lines peers; what every member saw, and in which order,
is compared with what the room sent. Where a test needs the network to misbehave (an echo that
is late, a connection that drops), playwright's WebSocket routing stands between the page and
the room; everything else goes straight to 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Dialog, Page, Route, WebSocket, WebSocketRoute, expect
from playwright.sync_api import Error as PlaywrightError

from browser import (
    PASSWORD,
    STEP,
    STEP_MS,
    Room,
    TerminalMember,
    chromium,
    log_in,
    open_tab,
    say,
    serve_room,
)
from multichat.client.outbox import Outbox
from multichat.client.reconnect import (
    FATAL_LOGIN,
    KICKS,
    NAME_HELD_SECONDS,
    RECONNECT_JITTER,
    RECONNECT_TRIES,
    after_refusal,
    backoff,
)
from multichat.client.tui_widgets import name_attr
from multichat.protocol import commands, wire
from multichat.protocol.connection import ClientConnection
from multichat.protocol.events import (
    Away,
    Back,
    CameBack,
    ConnectionClosed,
    Error,
    Event,
    Hello,
    InviteIssued,
    Join,
    Leave,
    Message,
    NeedData,
    Nick,
    Notice,
    Quit,
    Renamed,
    Say,
    Topic,
    WentAway,
)
from multichat.protocol.sanitize import clean_text
from multichat.server.limits import Limits

PHONE = (390, 844)
expect.set_options(timeout=STEP_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    with serve_room(tmp_path) as running:
        yield running


@dataclass(frozen=True)
class Row:
    """One message as the page shows it."""

    sender: str
    text: str
    time: str
    classes: str  # the row's: "pending", "sent", "failed", "mine"
    name_class: str  # the name's: "who nameN", or "who me" for the reader's own


def message_rows(page: Page) -> list[Row]:
    rows = page.eval_on_selector_all(
        "#messages .message",
        """rows => rows.map(row => [
            row.querySelector(".who").textContent,
            row.querySelector(".text").textContent,
            row.querySelector("time").textContent,
            row.className,
            row.querySelector(".who").className,
        ])""",
    )
    return [Row(*row) for row in rows]


def wait_for_delivered(page: Page, count: int) -> list[Row]:
    """Wait until the page shows `count` messages, none of its own still pending."""
    page.wait_for_function(
        """count => document.querySelectorAll("#messages .message").length >= count
            && !document.querySelector("#messages .pending")""",
        arg=count,
    )
    return message_rows(page)


def pump(page: Page, done: Callable[[], object]) -> None:
    """Let playwright run the WebSocket route's handlers until `done()` holds (bounded)."""
    deadline = time.monotonic() + STEP
    while not done():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def kolkata_clock(ts: float) -> str:
    """HH:MM in Asia/Kolkata, UTC+05:30 all year since 1945: a half-hour offset, no DST."""
    return time.strftime("%H:%M", time.gmtime(ts + 5.5 * 3600))


def test_two_browsers_and_a_terminal_member_see_each_others_lines_in_room_order(
    browser: Browser, room: Room
) -> None:
    carol = TerminalMember(room.port, "carol")
    desk = open_tab(browser, room.url, timezone_id="Asia/Kolkata")
    phone = open_tab(browser, room.url, viewport=PHONE, is_mobile=True, has_touch=True)
    with desk as alice, phone as bob:
        log_in(alice.page, "alice")
        log_in(bob.page, "bob")
        carol.wait_for(Join, lambda join: join.name == "bob")
        for n in range(3):  # without waiting: the room decides the order
            say(alice.page, f"alice {n}")
            say(bob.page, f"bob {n}")
            carol.say(f"carol {n}")
        heard = [carol.wait_for(Message) for _ in range(9)]
        room_order = [(m.sender, m.text) for m in heard]
        times = {(m.sender, m.text): m.ts for m in heard}
        assert sorted(room_order) == sorted(
            (who, f"{who} {n}") for who in ("alice", "bob", "carol") for n in range(3)
        )
        for tab, me in ((alice, "alice"), (bob, "bob")):
            rows = wait_for_delivered(tab.page, 9)
            assert len(rows) == 9, rows
            # Others' lines in the room's order; one's own where they were typed, confirmed.
            others = [(r.sender, r.text) for r in rows if r.sender != me]
            assert others == [line for line in room_order if line[0] != me]
            mine = [r for r in rows if r.sender == me]
            assert [r.text for r in mine] == [f"{me} {n}" for n in range(3)]
            assert all("sent" in r.classes.split() for r in mine), mine
            # Names coloured as the terminal client colours them; one's own in bold.
            for r in rows:
                expected = "me" if r.sender == me else name_attr(r.sender)
                assert r.name_class == f"who {expected}", r
        # Times are the room's, in the reader's own time zone.
        for r in message_rows(alice.page):
            assert r.time == kolkata_clock(times[(r.sender, r.text)]), r
    carol.close()


@contextmanager
def room_under_default_per_source_limits(state_dir: Path) -> Iterator[Room]:
    """A room whose per-source limits are the defaults, which the other tests lift: its
    clients are one friend's machine."""
    defaults = Limits()
    with serve_room(
        state_dir,
        connections_per_source=defaults.connections_per_source,
        unauthenticated_per_source=defaults.unauthenticated_per_source,
    ) as room:
        yield room


def test_a_browser_loads_the_page_and_joins_under_the_default_per_source_limits(
    browser: Browser, tmp_path: Path
) -> None:
    # The other tests lift the per-source limits (all their clients are 127.0.0.1); here a
    # terminal member and one browser are all there is, as one friend's machine. The browser
    # fetches the page's files over several connections at once, which the limits must allow.
    with room_under_default_per_source_limits(tmp_path) as room:
        carol = TerminalMember(room.port, "carol")
        for name in ("ann", "ben", "cat"):  # a fresh page each time: none may lose a file
            with open_tab(browser, room.url) as tab:
                tab.check()  # loaded (modules included) with every file
                log_in(tab.page, name)
                say(tab.page, f"hello from {name}")
                heard = carol.wait_for(Message)
                assert (heard.sender, heard.text) == (name, f"hello from {name}")
                tab.page.get_by_role("button", name="Leave").click()
                carol.wait_for(Leave, lambda leave, name=name: leave.name == name)
        carol.close()


def test_a_phone_on_the_lan_opens_the_page_over_tls_past_the_certificate_warning(
    browser: Browser, tmp_path: Path
) -> None:
    # A room with no tunnel gives phones `https://LAN:PORT/` (its banner and QR code): the same
    # listener, over TLS with the room's own certificate. A browser refuses it until the person
    # goes on past the warning, which `ignore_https_errors` stands for; then everything,
    # the WebSocket included, runs over TLS, under the default per-source limits.
    with room_under_default_per_source_limits(tmp_path) as room:
        page_url = f"https://127.0.0.1:{room.port}/"
        ctx = browser.new_context()
        try:
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                ctx.new_page().goto(page_url)
        finally:
            ctx.close()
        carol = TerminalMember(room.port, "carol")
        with open_tab(browser, page_url, viewport=PHONE, ignore_https_errors=True) as tab:
            sockets: list[str] = []
            tab.page.on("websocket", lambda ws: sockets.append(ws.url))
            log_in(tab.page, "dana")
            say(tab.page, "hello over tls")
            heard = carol.wait_for(Message)
            assert (heard.sender, heard.text) == ("dana", "hello over tls")
            assert sockets and all(url.startswith("wss://127.0.0.1:") for url in sockets)
        carol.close()


def test_enter_before_the_pages_script_runs_sends_the_password_nowhere(
    browser: Browser, room: Room
) -> None:
    # On a slow link (a phone, the tunnel) a person can type and press Enter before app.js
    # has run. A bare form is then the browser's to submit, as GET with the password in the
    # URL (the address bar, the history, every proxy's log); Chromium, which defers that
    # submission while the page's modules load, left the page dead instead (they were never
    # fetched), and a test that pressed Enter too early through the tunnel timed out so.
    ctx = browser.new_context()
    ctx.set_default_timeout(STEP_MS)
    try:
        page = ctx.new_page()
        held: list[Route] = []
        page.route("**/app.js", lambda route: held.append(route))  # answered when we say
        sent: list[str] = []
        page.on("request", lambda request: sent.append(f"{request.method} {request.url}"))
        page.goto(room.url, wait_until="commit")
        page.get_by_label("Room password").fill(PASSWORD)
        page.get_by_label("Your name").fill("alice")
        page.keyboard.press("Enter")  # in the name field (a locator would wait on a navigation)
        page.wait_for_timeout(500)
        assert page.url == room.url, page.url  # no navigation: nothing was submitted
        pump(page, lambda: bool(held))
        held[0].continue_()
        page.wait_for_timeout(500)  # (a submission held up behind the script goes now)
        leaks = [line for line in sent if "horse" in line or line.startswith("POST")]
        assert not leaks, leaks
        log_in(page, "alice")  # once the script has the form, Enter logs in
    finally:
        ctx.close()


def test_a_wrong_password_is_shown_beside_the_form_which_stays_usable(
    browser: Browser, room: Room
) -> None:
    carol = TerminalMember(room.port, "carol")
    with open_tab(browser, room.url, viewport=PHONE) as tab:
        page = tab.page
        password, name = page.get_by_label("Room password"), page.get_by_label("Your name")
        error = page.locator("#login-error")
        expect(error).to_be_hidden()
        password.fill("not the password")
        name.fill("alice")
        name.press("Enter")
        expect(error).to_have_text("wrong password")
        expect(password).to_be_focused()
        expect(password).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#chat")).to_be_hidden()
        # A name that is taken (ignoring case) is another refusal, about the other field.
        password.fill("correct horse")
        name.fill("Carol")
        page.get_by_role("button", name="Join").click()
        expect(error).to_have_text("the name 'Carol' is taken; pick another")
        expect(name).to_be_focused()
        expect(name).to_have_attribute("aria-invalid", "true")
        expect(password).to_have_attribute("aria-invalid", "false")
        name.fill("alice")
        name.press("Enter")
        expect(page.locator("#chat")).to_be_visible()
        expect(page.locator("#login")).to_be_hidden()
        carol.wait_for(Join, lambda join: join.name == "alice")
    carol.close()


def test_the_hosts_shutdown_shows_the_notice_and_ends_the_session(
    browser: Browser, room: Room
) -> None:
    with open_tab(browser, room.url) as tab:
        page = tab.page
        sockets: list[object] = []
        page.on("websocket", lambda socket: sockets.append(socket))
        log_in(page, "alice")
        assert room.stop() == 0  # SIGTERM: what Ctrl-C and `multichat down` do to the room
        notice = page.locator("#messages .shutdown")
        expect(notice.locator(".body")).to_have_text(
            "The room is closing: the host stopped the room"
        )
        expect(notice).to_have_attribute("role", "alert")
        expect(page.locator("#state")).to_have_text("room closed")
        expect(page.get_by_label("Message", exact=True)).to_be_disabled()
        expect(page.get_by_role("button", name="Join again")).to_be_focused()
        # A closed room is not a lost connection: no reconnecting. The first retry would come
        # 0.4 to 0.6 s after the close; nothing can be awaited for a thing that must not happen.
        page.wait_for_timeout(1500)
        assert len(sockets) == 1
        expect(page.locator("#state")).to_have_text("room closed")
        expect(page.locator("#messages .error")).to_have_count(0)


NASTY = (
    "<img src=x onerror=alert(1)><script>window.pwned = 1</script>"
    "\x1b[31mred\x1b[0m \u202eevil <b>bold</b> &amp; \x1b]0;title\x07"
)


def test_html_and_escape_sequences_from_the_network_are_shown_as_text(
    browser: Browser, room: Room
) -> None:
    eve = TerminalMember(room.port, "<i>eve</i> <img src=y>")
    with open_tab(browser, room.url) as tab:
        page = tab.page
        dialogs: list[str] = []

        def dialog(opened: Dialog) -> None:  # alert(), which the injected markup would call
            dialogs.append(opened.message)
            opened.dismiss()

        page.on("dialog", dialog)
        log_in(page, "alice")
        eve.say(NASTY)
        eve.wait_for(Message)
        say(page, NASTY)  # and the page's own line, pending and then confirmed
        shown = clean_text(NASTY)
        assert "\x1b" not in shown and "\u202e" not in shown  # the room cleaned it
        assert eve.wait_for(Message, lambda m: m.sender == "alice").text == shown
        rows = wait_for_delivered(page, 2)
        assert [(r.sender, r.text) for r in rows] == [
            ("<i>eve</i> <img src=y>", shown),
            ("alice", shown),
        ]
        assert page.locator("img, b, i, #messages script").count() == 0
        assert page.locator("script").count() == 1  # app.js
        assert page.evaluate("window.pwned") is None
        expect(page.locator("#members li")).to_have_text(["<i>eve</i> <img src=y>", "alice (you)"])
        assert not dialogs
    eve.close()


def test_an_own_line_is_pending_until_its_echo_confirms_it(browser: Browser, room: Room) -> None:
    carol = TerminalMember(room.port, "carol")
    held: list[tuple[WebSocketRoute, str]] = []

    def hold_echoes(page_side: WebSocketRoute) -> None:
        room_side = page_side.connect_to_server()

        def from_room(frame: str | bytes) -> None:
            if isinstance(frame, str) and '"id":' in frame:  # an echo: the acknowledgement
                held.append((page_side, frame))
            else:
                page_side.send(frame)

        room_side.on_message(from_room)

    with open_tab(browser, room.url) as tab:
        page = tab.page
        page.route_web_socket(re.compile(r"/ws$"), hold_echoes)
        log_in(page, "alice")
        say(page, "are you there?")
        row = page.locator("#messages .message").last
        expect(row).to_have_class(re.compile(r"\bpending\b"))
        pump(page, lambda: held)
        assert carol.wait_for(Message).text == "are you there?"
        # The room has it; the page does not know yet.
        expect(row).to_have_class(re.compile(r"\bpending\b"))
        expect(row.locator(".mark")).to_have_text(" …")
        side, echo = held.pop()
        side.send(echo)
        expect(row).to_have_class(re.compile(r"\bsent\b"))
        expect(row.locator(".mark")).to_have_text(" ✓")
        assert wait_for_delivered(page, 1)[0].text == "are you there?"
    carol.close()


def test_the_member_list_follows_joins_leaves_and_who(browser: Browser, room: Room) -> None:
    with open_tab(browser, room.url, viewport=PHONE) as tab:
        page = tab.page
        members = page.locator("#members li")
        log_in(page, "alice")
        expect(members).to_have_text(["alice (you)"])
        carol = TerminalMember(room.port, "carol")
        dave = TerminalMember(room.port, "dave")
        expect(members).to_have_text(["alice (you)", "carol", "dave"])
        expect(page.locator("#count")).to_have_text("3")
        carol.send(Quit())
        expect(members).to_have_text(["alice (you)", "dave"])
        dave.close()  # gone without a word
        expect(members).to_have_text(["alice (you)"])
        expect(page.locator("#count")).to_have_text("1")
        expect(page.locator("#messages .join")).to_have_text(
            [
                re.compile("→ carol joined$"),
                re.compile("→ dave joined$"),
            ]
        )
        expect(page.locator("#messages .leave")).to_have_text(
            [
                re.compile(r"← carol left \(quit\)$"),
                re.compile(r"← dave left \(disconnected\)$"),
            ]
        )
        eve = TerminalMember(room.port, "eve")
        expect(members).to_have_text(["alice (you)", "eve"])
        say(page, "/who")
        expect(page.locator("#messages .system").last).to_have_text(
            re.compile(r"Online \(2\): alice, eve$")
        )
        expect(page.get_by_label("Message", exact=True)).to_have_value("")
    eve.close()


def test_actions_private_messages_renames_and_away_are_shown_for_what_they_are(
    browser: Browser, room: Room
) -> None:
    carol = TerminalMember(room.port, "carol")
    with open_tab(browser, room.url) as tab:
        page = tab.page
        log_in(page, "alice")
        carol.say("waves", id="1")
        carol.send(Say("psst, only for you", "2", to="alice"))
        carol.send(Nick("caroline"))
        carol.send(Away("lunch"))
        carol.send(Back())
        expect(page.locator("#messages .message .body")).to_have_text(
            ["carol: waves", "(private to alice) carol: psst, only for you"]
        )
        carol.send(Say("nods", "3", action=True))
        expect(page.locator("#messages .message .body").last).to_have_text("* caroline nods")
        expect(page.locator("#messages .entry:not(.message) .body")).to_contain_text(
            ["carol is now called caroline", "caroline is away: lunch", "caroline is back"]
        )
        expect(page.locator("#members li")).to_have_text(["caroline", "alice (you)"])
    carol.close()


def test_a_lost_connection_is_rebuilt_and_no_line_is_lost_or_sent_twice(
    browser: Browser, room: Room
) -> None:
    carol = TerminalMember(room.port, "carol")
    connections: list[WebSocketRoute] = []
    cutting = False
    lost_echoes: list[str] = []
    lost_lines: list[str] = []

    def flaky(page_side: WebSocketRoute) -> None:
        """The first connection goes bad: one echo and one line get lost, then it drops."""
        room_side = page_side.connect_to_server()
        connections.append(page_side)
        if len(connections) > 1:
            return  # later connections are fine

        def from_room(frame: str | bytes) -> None:
            if cutting and isinstance(frame, str) and '"id":' in frame:
                lost_echoes.append(frame)
            else:
                page_side.send(frame)

        def from_page(frame: str | bytes) -> None:
            if cutting and isinstance(frame, str) and "never reached" in frame:
                lost_lines.append(frame)
            else:
                room_side.send(frame)

        room_side.on_message(from_room)
        page_side.on_message(from_page)

    with open_tab(browser, room.url) as tab:
        page = tab.page
        page.route_web_socket(re.compile(r"/ws$"), flaky)
        log_in(page, "alice")
        say(page, "before the cut")
        wait_for_delivered(page, 1)
        cutting = True
        say(page, "delivered, but the echo is lost")
        say(page, "never reached the room")
        pump(page, lambda: lost_echoes and lost_lines)
        assert carol.wait_for(Message).text == "before the cut"
        assert carol.wait_for(Message).text == "delivered, but the echo is lost"
        expect(page.locator("#messages .pending")).to_have_count(2)
        connections[0].close()  # the network drops: both sides see the close
        expect(page.locator("#messages .error").first).to_have_text(
            re.compile("Connection lost: the server closed the connection$")
        )
        expect(page.locator("#messages .system").last).to_have_text(re.compile("Reconnected.$"))
        wait_for_delivered(page, 3)
        say(page, "after the rejoin")
        assert carol.wait_for(Message).text == "never reached the room"
        assert carol.wait_for(Message).text == "after the rejoin"
        rows = wait_for_delivered(page, 4)
        expected = [
            "before the cut",
            "delivered, but the echo is lost",
            "never reached the room",
            "after the rejoin",
        ]
        assert [r.text for r in rows] == expected
        assert all("sent" in r.classes.split() for r in rows), rows
        expect(page.locator("#state")).to_have_text("connected")
        assert len(connections) == 2
        # Every line once, in the order typed: carol saw nothing else from alice.
        said = [e.text for e in carol.events if isinstance(e, Message)]
        assert said == expected
    carol.close()


def test_reconnecting_backs_off_from_half_a_second_to_eight_and_gives_up_after_eight_tries(
    browser: Browser, room: Room
) -> None:
    with open_tab(browser, room.url, fake_clock=True) as tab:
        page = tab.page
        sockets: list[object] = []
        page.on("websocket", lambda socket: sockets.append(socket))
        state = page.locator("#state")
        log_in(page, "alice")
        page.clock.pause_at(datetime.now() + timedelta(seconds=1))  # from here on, time is ours
        room.process.kill()  # the host's machine died: no notice, the room is just gone
        room.process.wait(STEP)
        expect(state).to_have_text("reconnecting 1/8")
        say(page, "typed while the room is away")
        expect(state).to_have_text("1 waiting · reconnecting 1/8")
        for attempt in range(1, 9):
            delay = min(8000, 500 * 2 ** (attempt - 1))  # then 0.8 to 1.2 times that: jitter
            page.clock.run_for(int(delay * 0.8) - 1)
            page.wait_for_timeout(100)  # real time: a socket opened now would show by then
            assert len(sockets) == attempt, f"try {attempt} came early"
            page.clock.run_for(int(delay * 0.4) + 2)
            # That try failed too (the state says so once it has); the next one is scheduled.
            after = f"1 waiting · reconnecting {attempt + 1}/8" if attempt < 8 else "disconnected"
            expect(state).to_have_text(after)
            assert len(sockets) == attempt + 1
        expect(page.locator("#messages .error").last).to_have_text(
            re.compile("Could not reconnect after 8 tries: could not reach the room$")
        )
        row = page.locator("#messages .message").last
        expect(row).to_have_class(re.compile(r"\bfailed\b"))
        expect(row.locator(".mark")).to_have_text(" (not sent: the connection ended)")
        expect(page.get_by_role("button", name="Join again")).to_be_visible()


def test_the_page_answers_the_rooms_idle_pings_and_stays(browser: Browser, tmp_path: Path) -> None:
    # The room pings after 1 s of silence and closes after 2.5 s: three pongs take over 3 s.
    sockets: list[WebSocket] = []
    pings: list[str] = []
    pongs: list[str] = []

    def opened(socket: WebSocket) -> None:
        sockets.append(socket)
        socket.on("framereceived", lambda frame: pings.append(str(frame)))
        socket.on("framesent", lambda frame: pongs.append(str(frame)))

    with (
        serve_room(tmp_path, idle_ping_seconds=1, idle_close_seconds=2.5) as room,
        open_tab(browser, room.url) as tab,
    ):
        page = tab.page
        page.on("websocket", opened)
        log_in(page, "alice")
        pump(page, lambda: sum('"pong"' in frame for frame in pongs) >= 3)
        assert sum('"ping"' in frame for frame in pings) >= 3
        assert len(sockets) == 1
        expect(page.locator("#state")).to_have_text("connected")
        expect(page.locator("#messages .error")).to_have_count(0)


def test_tata_and_the_leave_button_leave_after_pending_lines_are_delivered(
    browser: Browser, room: Room
) -> None:
    carol = TerminalMember(room.port, "carol")
    with open_tab(browser, room.url) as first, open_tab(browser, room.url) as second:
        log_in(first.page, "alice")
        log_in(second.page, "bob")
        say(first.page, "last words")
        say(first.page, "tata")
        # The quit waits for the echo of the line before it.
        assert carol.wait_for(Message).text == "last words"
        leave = carol.wait_for(Leave)
        assert (leave.name, leave.reason) == ("alice", "quit")
        expect(first.page.locator("#state")).to_have_text("you left")
        expect(first.page.locator("#messages .system").last).to_have_text(re.compile("You left.$"))
        assert [r.classes for r in message_rows(first.page)] == ["entry message mine sent"]

        second.page.get_by_role("button", name="Leave").click()
        leave = carol.wait_for(Leave)
        assert (leave.name, leave.reason) == ("bob", "quit")
        expect(second.page.locator("#state")).to_have_text("you left")

        # Back to the form, and into the room again.
        first.page.get_by_role("button", name="Join again").click()
        expect(first.page.get_by_label("Room password")).to_be_focused()
        first.page.get_by_label("Your name").press("Enter")
        expect(first.page.locator("#chat")).to_be_visible()
        expect(first.page.locator("#members li")).to_have_text(["carol", "alice (you)"])
    carol.close()


def test_keyboard_only_with_labels_for_screen_readers(browser: Browser, room: Room) -> None:
    with open_tab(browser, room.url) as tab:
        page = tab.page
        assert page.get_attribute("html", "lang") == "en"
        active = "document.activeElement.id"
        page.keyboard.press("Tab")
        assert page.evaluate(active) == "password"
        # Focus is visible (and only drawn for keyboard focus, by :focus-visible).
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        page.keyboard.type("correct horse")
        page.keyboard.press("Tab")
        assert page.evaluate(active) == "name"
        page.keyboard.type("alice")
        page.keyboard.press("Enter")
        expect(page.locator("#chat")).to_be_visible()
        expect(page.get_by_role("textbox", name="Message", exact=True)).to_be_focused()
        # Shift+Enter is a new line; Enter sends.
        page.keyboard.type("line one")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("line two")
        page.keyboard.press("Enter")
        assert wait_for_delivered(page, 1)[0].text == "line one\nline two"
        # A line longer than the room takes stays in the box, to be shortened.
        box = page.get_by_label("Message", exact=True)
        box.fill("x" * 4001)
        box.press("Enter")
        expect(page.locator("#messages .error").last).to_have_text(
            re.compile(r"Too long to send \(4001 characters; at most 4000\)\.$")
        )
        expect(box).to_have_value("x" * 4001)
        # The order a keyboard goes through the room: the bar, the log, the box, Send.
        page.get_by_role("button", name="Leave").focus()
        order = []
        for _ in range(3):
            page.keyboard.press("Tab")
            order.append(page.evaluate(active))
        assert order == ["messages", "say", "send"]
        log = page.get_by_role("log", name="Messages")
        expect(log).to_have_attribute("aria-live", "polite")
        expect(page.get_by_role("heading", name=re.compile(r"Online \(1\)"))).to_be_visible()
        expect(page.get_by_role("button", name="Send")).to_be_visible()


NAMES = [
    "alice",
    "Bob",
    "carol",
    "ẞtraße",  # capital sharp s: casefolds to "ss", which upper-then-lower does not give
    "ıstanbul",  # dotless i: stays
    "İzmir",
    "ΟΔΥΣΣΕΥΣ",  # no final-sigma form: casefold is per character
    "Ꭰꭰᏸ",  # Cherokee folds to capitals
    "ﬃ",
    "Zoë",
    "李雷",
    "😀 smile",
    "\u212a Kelvin",  # Kelvin sign: folds to a plain k
]
TEXTS = [
    "plain",
    "a\x1b[2Jb",
    "tab\there",
    "cr\r\nlf\rx\x0by\x0cz",
    "\u202eevil\u2066",
    "zw\u200bsp\u00adace",
    "emoji 👩\u200d💻 \ufe0f",
    "\ufeffbom",
    "\U000e0041tag \U000e0100 variation",
    "nonchar \ufffe \U0001ffff \ufdd0",
    "nel\x85x\u2028y\u2029z",
    "\x9b31m csi",
    "\U000110bd \U0001d173",
]


def test_the_page_colours_names_and_cleans_text_as_the_terminal_client_does(
    browser: Browser, room: Room
) -> None:
    with open_tab(browser, room.url) as tab:
        page = tab.page
        colours = page.evaluate("names => names.map(window.multichat.nameColour)", NAMES)
        assert [f"name{c}" for c in colours] == [name_attr(n) for n in NAMES]
        cleaned = page.evaluate("texts => texts.map(window.multichat.cleanText)", TEXTS)
        assert cleaned == [clean_text(t) for t in TEXTS]
        # A JSON string can carry lone surrogates; they go, and a pair stays.
        lone = page.evaluate(r"window.multichat.cleanText('a\ud800b\udc00c\ud83d\ude00')")
        assert lone == "abc😀"


def test_the_page_reconnects_as_the_terminal_client_does(browser: Browser, room: Room) -> None:
    # A rejoin refused, by every code either side knows and one neither does, just after the
    # loss and after the name stops being held; and the delays before each try.
    codes = sorted(FATAL_LOGIN | KICKS | {"name_taken", "room_full", "shutting_down", "new"})
    lost_for = [0.0, NAME_HELD_SECONDS - 1, NAME_HELD_SECONDS + 1]
    with open_tab(browser, room.url) as tab:
        verdicts = tab.page.evaluate(
            "([codes, times]) => codes.map((code) => times.map("
            "(s) => window.multichat.afterRefusal(code, s * 1000)))",
            [codes, lost_for],
        )
        delays = tab.page.evaluate(
            "tries => tries.map((n) => Array.from({length: 50}, () => "
            "window.multichat.retryDelay(n)))",
            list(range(1, RECONNECT_TRIES + 1)),
        )
    assert verdicts == [[after_refusal(code, s) for s in lost_for] for code in codes]
    for attempt, tried in enumerate(delays, start=1):
        low, high = (backoff(attempt) * (1 + side * RECONNECT_JITTER) for side in (-1, 1))
        assert all(low * 1000 <= ms <= high * 1000 for ms in tried), (attempt, tried)


# -- the lines typed, until their echo (client/outbox.py and outbox.js) --

# The same walk through both outboxes: refusals of each kind, a retry coming due, the
# connection lost, a replayed line of ours claimed, and an echo. Ids differ; texts do not.
OUTBOX_WALK = """
({ lines, refusals }) => {
  const box = new window.multichat.Outbox();
  const texts = (taken) => taken.map((line) => line.text);
  const walk = [];
  for (const [text, to] of lines) box.add(text, to);
  const sent = box.take();
  walk.push(texts(sent));
  for (const [code, message, which] of refusals) {
    const refusal = box.refuse(code, message, which === null ? undefined : sent[which].id);
    walk.push(refusal && [refusal[0].text, refusal[1]]);
  }
  walk.push(box.pending().length);
  walk.push(box.retryDue(sent[1]));
  box.requeue();
  walk.push(texts(box.queued));
  const claimed = box.claimReplayed({ type: "message", from: "me", text: "e" }, "me");
  walk.push(claimed && claimed.text);
  const again = box.take();
  box.acknowledge(again[0].id);
  walk.push(texts(again), box.pending().length);
  return walk;
}
"""
OUTBOX_LINES = [["a", None], ["b", None], ["c", "Ann B"], ["d", None], ["e", None], ["f", None]]
OUTBOX_REFUSALS = [
    ["too_long", "too long", None],  # no id: the oldest line waiting for its echo
    ["unavailable", "the room's backplane is away", 1],  # by its id
    ["no_such_member", "nobody called 'Ann B' is in the room", None],
    ["shutting_down", "the room is closing", None],
    ["slow_mode", "a newer server's refusal of a line", 5],  # by its id: shown, given up
    ["bad_frame", "not a line's", None],
]


def python_outbox_walk() -> list[object]:
    box = Outbox()
    walk: list[object] = []
    for text, to in OUTBOX_LINES:
        box.add_nowait(text, to=to)
    sent = box.take_nowait()
    walk.append([line.text for line in sent])
    for code, message, which in OUTBOX_REFUSALS:
        id = None if which is None else sent[int(which)].id
        refusal = box.refuse_nowait(Error(str(code), str(message), id), now=0.0)
        walk.append(refusal and [refusal[0].text, refusal[1]])
    walk.append(len(box))
    box.retry_due_nowait(now=10.0)
    walk.append(True)
    box.requeue_nowait()
    walk.append([line.text for line in box])
    claimed = box.claim_replayed_nowait("e")
    walk.append(claimed and claimed.text)
    again = box.take_nowait()
    box.acknowledge_nowait(again[0].id)
    walk.extend([[line.text for line in again], len(box)])
    return walk


def test_the_page_keeps_typed_lines_as_the_terminal_client_does(
    browser: Browser, room: Room
) -> None:
    with open_tab(browser, room.url) as tab:
        walk = tab.page.evaluate(OUTBOX_WALK, {"lines": OUTBOX_LINES, "refusals": OUTBOX_REFUSALS})
    assert walk == python_outbox_walk()
    assert walk == [
        ["a", "b", "c", "d", "e", "f"],
        ["a", "dropped"],
        ["b", "retried"],
        ["c", "dropped"],
        ["d", "deferred"],
        ["f", "dropped"],
        None,
        3,  # b retrying, d deferred, e waiting for its echo
        True,
        ["d", "e", "b"],  # connection lost: d and e back in front of b, queued by its retry
        "e",  # e may have been delivered: the replay says it was
        ["d", "b"],
        1,
    ]


# -- what a member types: the room's one grammar (protocol/commands.py) --

COMMAND_LINES = [
    "/msg bob hi there",
    '/msg "Ann B" hi Ann',
    '/msg "Ann B hi',
    '/msg "" hi',
    "/msg bob",
    "/msg bob    ",
    "/msg",
    "/m bob x",
    "/TELL bob x",
    "/me waves",
    "/me",
    "/nick alicia",
    '/nick "Ann B"',
    "/nick",
    "/away",
    "/away gone to lunch",
    "/back",
    "/topic weekend plans",
    "/topic",
    "/who",
    "/names",
    "/rooms",
    "/list",
    "/join games",
    '/join "board games"',
    "/j Board Games",
    "/join",
    '/join ""',
    "/help",
    "/?",
    "/quit",
    "/exit",
    "/lock",
    "/unlock",
    "/bans",
    "/kick bob",
    "/kick bob being rude",
    '/kick "Ann B" rude',
    "/kick",
    "/ban bob",
    "/ban bob --for 10m spam and more spam",
    "/ban 203.0.113.5 --for=1h30m",
    "/ban bob spam --for 2h",
    "/ban bob --for 1.5h",
    "/ban bob --for 10x",
    "/ban bob --for",
    "/ban bob --for 0s",
    "/ban bob --for 400d",
    "/ban bob --for=",
    "/ban --for 1h",
    "/ban bob --for 10M",
    "/ban bob --for \u0661\u0660m",  # Arabic-Indic digits: Python's \\d and float() read them
    '/ban bob --for "it\'s"',
    "/ban bob --for \x1b[1m",
    "/unban bob",
    "/unban 203.0.113.5 now",
    "/unban",
    "/mute bob --for 30s",
    "/mute bob --for 2w",
    "/mute bob loud",
    "/mute",
    "/unmute bob",
    "/op carol",
    "/OP carol",
    "/deop carol",
    "/deop",
    "/frobnicate",
    "/averyveryverylongcommandname123456789 x",
    "/msg\tbob hi",
    "/  msg bob",
    "  /msg bob hi  ",
]


def python_parse(line: str) -> dict[str, object]:
    """What protocol/commands.py makes of `line`: the frame wire.py sends, or the usage."""
    try:
        return {"frame": wire.to_json(commands.parse(line))}
    except commands.CommandError as exc:
        return {"error": str(exc)}


def test_the_page_reads_commands_with_the_rooms_one_grammar(browser: Browser, room: Room) -> None:
    with open_tab(browser, room.url) as tab:
        page = tab.page
        # The help tables are a copy of Python's; a command added there must be added here.
        assert page.evaluate("window.multichat.HELP") == [list(row) for row in commands.HELP]
        assert page.evaluate("window.multichat.OPERATOR_HELP") == [
            list(row) for row in commands.OPERATOR_HELP
        ]
        answers = page.evaluate("lines => lines.map(window.multichat.parseCommand)", COMMAND_LINES)
        for line, answer in zip(COMMAND_LINES, answers, strict=True):
            assert answer == python_parse(line), line
        # Every command in the tables completes with Tab.
        listed = {
            word
            for usage, meaning in (*commands.HELP, *commands.OPERATOR_HELP)
            for word in re.findall(r"(?<![/\w])/([a-z]+)", f"{usage} {meaning}")
        }
        assert page.evaluate("window.multichat.COMMAND_NAMES") == sorted(listed)


def frames_sent(page: Page) -> list[dict[str, object]]:
    """Every frame the page sends from now on, on any of its sockets, decoded, in order."""
    frames: list[dict[str, object]] = []

    def opened(socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", opened)
    return frames


def requests(frames: list[dict[str, object]]) -> list[dict[str, object]]:
    """The frames a member's typing sent: no login, no keep-alive, and no ids (random)."""
    typed = [f for f in frames if f["type"] not in ("hello", "ping", "pong")][1:]  # 1st: who
    return [{k: v for k, v in f.items() if k != "id"} for f in typed]


def bodies(page: Page, kind: str) -> list[str]:
    return page.locator(f"#messages .{kind} .body").all_text_contents()


def test_chat_commands_go_to_the_room_as_its_frames(browser: Browser, room: Room) -> None:
    carol = TerminalMember(room.port, "carol")
    ann = TerminalMember(room.port, "Ann B")
    with open_tab(browser, room.url) as tab:
        page = tab.page
        sent = frames_sent(page)
        log_in(page, "alice")
        box = page.get_by_label("Message", exact=True)
        members = page.locator("#members li")

        say(page, "/msg carol psst")
        private = carol.wait_for(Message)
        assert (private.sender, private.text, private.to) == ("alice", "psst", "carol")
        say(page, '/msg "Ann B" hi Ann')
        assert ann.wait_for(Message, lambda m: m.sender == "alice").text == "hi Ann"
        say(page, "/me waves")
        action = carol.wait_for(Message)
        assert (action.text, action.action, action.to) == ("waves", True, None)
        expect(page.locator("#messages .message .body")).to_have_text(
            [
                "(private to carol) alice: psst ✓",
                "(private to Ann B) alice: hi Ann ✓",
                "* alice waves ✓",
            ]
        )
        say(page, "/msg nobody are you there")
        expect(page.locator("#messages .message").last).to_have_class(re.compile(r"\bfailed\b"))
        expect(page.locator("#messages .message .mark").last).to_have_text(
            " (not sent: nobody called 'nobody' is in the room)"
        )

        say(page, "/away gone to lunch")
        assert carol.wait_for(WentAway) == WentAway("alice", "gone to lunch")
        expect(members).to_have_text(["carol", "Ann B", "alice (you, away: gone to lunch)"])
        say(page, "/back")
        assert carol.wait_for(CameBack) == CameBack("alice")
        expect(members.last).to_have_text("alice (you)")
        say(page, "/nick alicia")
        assert carol.wait_for(Renamed).new == "alicia"
        expect(members.last).to_have_text("alicia (you)")
        say(page, "/who")
        expect(page.locator("#messages .system .body").last).to_have_text(
            "Online (3): carol, Ann B, alicia"
        )

        # Operators' commands are refused by the room, which says why.
        say(page, "/topic weekend plans")
        expect(page.locator("#messages .error .body").last).to_have_text(
            "only operators set the topic; ask the host"
        )
        say(page, '/kick "Ann B" too quiet')
        expect(page.locator("#messages .error .body").last).to_have_text(
            "/kick is for operators; ask the host"
        )
        # A command that does not parse is told here, with the room's words, and is sent nowhere;
        # it stays in the box to be put right.
        for line in ("/ban carol --for 10x", "/frobnicate now", "/mute"):
            say(page, line)
            expect(page.locator("#messages .error .body").last).to_have_text(
                python_parse(line)["error"]
            )
            expect(box).to_have_value(line)
        expect(page.locator("#messages .error .body")).to_have_text(
            [
                "only operators set the topic; ask the host",
                "/kick is for operators; ask the host",
                "'10x' is not a duration; try 30s, 10m, 2h or 1d",
                "unknown command /frobnicate; /help lists them",
                "usage: /mute NAME [--for DURATION]",
            ]
        )
        say(page, "/help")
        help_rows = page.locator("#messages .help tr:has(td)")
        expect(help_rows).to_have_count(
            len(commands.HELP) + len(commands.OPERATOR_HELP) + 3  # and three keys
        )
        shown = [row.locator("td").all_text_contents() for row in help_rows.all()]
        assert shown[:-3] == [list(row) for row in (*commands.HELP, *commands.OPERATOR_HELP)]
        expect(page.locator("#messages .help th")).to_have_text(
            ["Commands", "Operators also", "Keys"]
        )
        expect(box).to_have_value("")

        assert requests(sent) == [
            {"type": "say", "text": "psst", "to": "carol"},
            {"type": "say", "text": "hi Ann", "to": "Ann B"},
            {"type": "say", "text": "waves", "action": True},
            {"type": "say", "text": "are you there", "to": "nobody"},
            {"type": "away", "text": "gone to lunch"},
            {"type": "back"},
            {"type": "nick", "name": "alicia"},
            {"type": "who"},
            {"type": "topic", "text": "weekend plans"},
            {"type": "kick", "name": "Ann B", "reason": "too quiet"},
        ]
    carol.close()
    ann.close()


def hello_answer(port: int, name: str) -> Event | ConnectionClosed:
    """What the room answers a terminal member's hello (a welcome, or why not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as sock:
        conn = ClientConnection()
        sock.sendall(conn.send(Hello(name, PASSWORD)))
        while isinstance(event := conn.next_event(), NeedData):
            conn.receive_data(sock.recv(65536))
        return event


def test_an_operator_moderates_from_the_page(browser: Browser, room: Room) -> None:
    carol = TerminalMember(room.port, "carol")
    with open_tab(browser, room.url) as first, open_tab(browser, room.url) as second:
        alice, bob = first.page, second.page
        sent = frames_sent(alice)
        log_in(alice, "alice")
        log_in(bob, "bob")
        carol.wait_for(Join, lambda join: join.name == "bob")
        made = room.control("op", "alice")
        assert isinstance(made, Notice) and made.text == "host made alice an operator"
        expect(alice.locator("#messages .notice .body")).to_have_text(
            ["host made alice an operator"]
        )
        say(alice, "/who")
        expect(alice.locator("#members li")).to_have_text(["carol", "alice (you, op)", "bob"])

        say(alice, "/topic weekend plans")
        assert carol.wait_for(Topic) == Topic("weekend plans", "alice")
        for page in (alice, bob):
            expect(page.locator("#topic")).to_have_text("Topic: weekend plans")
        with open_tab(browser, room.url) as third:  # a newcomer sees it from the welcome on
            log_in(third.page, "dave")
            expect(third.page.locator("#topic")).to_have_text("Topic: weekend plans")
            third.page.get_by_role("button", name="Leave").click()
            carol.wait_for(Leave, lambda leave: leave.name == "dave")

        say(alice, "/mute carol --for 10m")
        notice = carol.wait_for(Notice)
        assert notice.text == "alice muted carol for 10m"
        carol.say("can I still talk?")
        assert carol.wait_for(Error).code == "muted"
        say(alice, "/unmute carol")
        assert carol.wait_for(Notice).text == "alice unmuted carol"
        say(alice, "/lock")
        assert carol.wait_for(Notice).text == "alice locked the room: nobody new can join"
        refused = hello_answer(room.port, "eve")
        assert isinstance(refused, Error) and refused.code == "locked"
        say(alice, "/unlock")
        assert carol.wait_for(Notice).text == "alice unlocked the room"
        say(alice, "/op bob")
        assert carol.wait_for(Notice).text == "alice made bob an operator"
        say(alice, "/deop bob")
        assert carol.wait_for(Notice).text == "alice took operator rights from bob"
        # The room tells everyone, and the operator twice (its answer too): shown once.
        expect(alice.locator("#messages .notice .body")).to_have_text(
            [
                "host made alice an operator",
                "alice muted carol for 10m",
                "alice unmuted carol",
                "alice locked the room: nobody new can join",
                "alice unlocked the room",
                "alice made bob an operator",
                "alice took operator rights from bob",
            ]
        )
        expect(bob.locator("#messages .notice .body")).to_have_count(7)

        # Bans, by an address nobody here has (every member here is 127.0.0.1).
        say(alice, "/ban 203.0.113.5 --for 1h spam")
        expect(alice.locator("#messages .notice .body").last).to_have_text(
            "alice banned 203.0.113.5 for 1h (spam)"
        )
        say(alice, "/bans")
        table = alice.locator("#messages .bans table").last
        expect(table.locator("caption")).to_have_text("Bans (1)")
        expect(table.locator("th")).to_have_text(["Address", "Name", "Until", "By", "Reason"])
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + 3600))
        cells = table.locator("td")
        expect(cells).to_have_count(5)
        assert cells.all_text_contents()[:2] == ["203.0.113.5", ""]
        assert cells.all_text_contents()[3:] == ["alice", "spam"]
        # Within a minute of an hour from now (the clock may turn a minute meanwhile).
        shown = datetime.strptime(cells.nth(2).text_content() or "", "%Y-%m-%d %H:%M")
        assert abs(shown - datetime.strptime(until, "%Y-%m-%d %H:%M")) <= timedelta(minutes=1)
        say(alice, "/unban 203.0.113.5")
        expect(alice.locator("#messages .notice .body").last).to_have_text(
            "alice lifted the ban on 203.0.113.5"
        )
        say(alice, "/bans")
        expect(alice.locator("#messages .bans .body").last).to_have_text("No bans.")

        assert requests(sent) == [
            {"type": "who"},
            {"type": "topic", "text": "weekend plans"},
            {"type": "mute", "name": "carol", "seconds": 600},
            {"type": "unmute", "name": "carol"},
            {"type": "lock"},
            {"type": "unlock"},
            {"type": "op", "name": "bob"},
            {"type": "deop", "name": "bob"},
            {"type": "ban", "target": "203.0.113.5", "seconds": 3600, "reason": "spam"},
            {"type": "bans"},
            {"type": "unban", "target": "203.0.113.5"},
            {"type": "bans"},
        ]
    carol.close()


def test_kicked_or_banned_the_page_says_why_and_does_not_come_back(
    browser: Browser, room: Room
) -> None:
    carol = TerminalMember(room.port, "carol")
    with open_tab(browser, room.url) as first, open_tab(browser, room.url) as second:
        alice, bob = first.page, second.page
        sockets: list[WebSocket] = []
        bob.on("websocket", lambda socket: sockets.append(socket))
        log_in(alice, "alice")
        log_in(bob, "bob")
        room.control("op", "alice")
        say(bob, "typed just before")  # and its echo is there before the kick
        carol.wait_for(Message)
        say(alice, "/kick bob being rude")
        left = carol.wait_for(Leave)
        assert (left.name, left.reason) == ("bob", "kicked: being rude")
        removed = bob.locator("#messages .removed")
        expect(removed.locator(".body")).to_have_text("You were kicked by alice: being rude")
        expect(removed).to_have_attribute("role", "alert")
        expect(bob.locator("#state")).to_have_text("removed from the room")
        expect(bob.get_by_label("Message", exact=True)).to_be_disabled()
        expect(bob.get_by_role("button", name="Join again")).to_be_focused()
        expect(alice.locator("#messages .notice .body").last).to_have_text(
            "alice kicked bob (being rude)"
        )
        # No reconnecting: the first try would come 0.4 to 0.6 s after the close; nothing can
        # be awaited for a thing that must not happen.
        bob.wait_for_timeout(1500)
        assert len(sockets) == 1
        expect(bob.locator("#messages .error")).to_have_count(0)

        # A kick is not a ban: bob may come back, and is banned then, by the host (by address:
        # 127.0.0.1, where every member here is).
        bob.get_by_role("button", name="Join again").click()
        bob.get_by_label("Room password").fill(PASSWORD)
        bob.get_by_label("Your name").press("Enter")
        expect(bob.locator("#chat")).to_be_visible()
        carol.wait_for(Join, lambda join: join.name == "bob")
        assert isinstance(room.control("ban", "bob", "spam"), Notice)
        for page, by in ((bob, "host"), (alice, "host")):
            expect(page.locator("#messages .removed .body")).to_have_text(
                f"You were banned by {by}: spam"
            )
            expect(page.locator("#state")).to_have_text("removed from the room")
        bob.get_by_role("button", name="Join again").click()
        bob.get_by_label("Room password").fill(PASSWORD)
        bob.get_by_label("Your name").press("Enter")
        expect(bob.locator("#login-error")).to_have_text("you are banned from this room: spam")
        assert len(sockets) == 3
    carol.close()


# -- mentions, Tab and the topic --

MENTIONS = [  # (text, name, whether it mentions the name), as client/names.py says
    ("hey Alice, lunch?", "alice", True),
    ("malice aforethought", "alice", False),
    ("@alice: ok", "alice", True),
    ("alice's cat", "alice", True),
    ("ALICE!", "alice", True),
    ("(alice)", "alice", True),
    ("alicealice", "alice", False),
    ("a.l.i.c.e", "alice", False),
    ("\uff41\uff4c\uff49\uff43\uff45", "alice", True),  # fullwidth
    ("Stra\u00dfe", "STRASSE", True),
    ("hi ann b!", "Ann B", True),
    ("hi annb", "Ann B", True),
    ("hi ann", "Ann B", False),
    ("ann bee", "Ann B", False),
]


def test_a_line_that_names_me_stands_out_and_is_announced(browser: Browser, room: Room) -> None:
    carol = TerminalMember(room.port, "carol")
    carol.say("alice will be here soon")  # history when alice joins: marked, not announced
    carol.wait_for(Message)
    with open_tab(browser, room.url) as tab:
        page = tab.page
        texts = [text for text, _, _ in MENTIONS]
        names = [name for _, name, _ in MENTIONS]
        found = page.evaluate(
            "([texts, names]) => texts.map((t, i) => window.multichat.mentions(t, names[i]))",
            [texts, names],
        )
        assert found == [expected for _, _, expected in MENTIONS]

        log_in(page, "alice")
        alert = page.locator("#mention-alert")
        expect(alert).to_have_attribute("aria-live", "assertive")
        expect(page.locator("#messages .mention .body")).to_have_text(
            ["carol: alice will be here soon"]
        )
        expect(alert).to_have_text("")
        carol.say("malice aforethought")
        carol.say("hey Alice, lunch?")
        expect(alert).to_have_text("carol mentioned you: hey Alice, lunch?")
        carol.send(Say("just for you", to="alice"))
        expect(alert).to_have_text("carol sent you a private message: just for you")
        say(page, "I am alice")  # my own name in my own line is no news
        wait_for_delivered(page, 5)
        rows = message_rows(page)
        assert [(r.text, "mention" in r.classes.split()) for r in rows] == [
            ("alice will be here soon", True),
            ("malice aforethought", False),
            ("hey Alice, lunch?", True),
            ("just for you", True),
            ("I am alice", False),
        ]
        expect(alert).to_have_text("carol sent you a private message: just for you")
    carol.close()


def test_tab_completes_names_and_commands(browser: Browser, room: Room) -> None:
    others = [TerminalMember(room.port, name) for name in ("carol", "Ann B", "anna")]
    with open_tab(browser, room.url) as tab:
        page = tab.page
        log_in(page, "alice")
        expect(page.locator("#count")).to_have_text("4")
        box = page.get_by_label("Message", exact=True)

        def typed(text: str, *tabs: str) -> None:
            """Type `text`, then press Tab once for each value the box must show after it."""
            box.fill("")
            box.press_sequentially(text)
            for value in tabs:
                box.press("Tab")
                expect(box).to_have_value(value)
                expect(box).to_be_focused()

        typed("/ms", "/msg ")
        # Names in the order of their case-folded spelling; one with a space is quoted.
        box.press_sequentially("an")
        for value in ('/msg "Ann B" ', "/msg anna ", '/msg "Ann B" '):
            box.press("Tab")
            expect(box).to_have_value(value)
        box.press_sequentially("hello")
        expect(box).to_have_value('/msg "Ann B" hello')
        typed("ca", "carol: ")  # at the start of a line: addressing someone
        typed("see you CA", "see you carol ")
        typed("hi @ann", "hi @Ann B ", "hi @anna ")
        typed("/ba", "/back ", "/ban ", "/bans ", "/back ")
        typed("/kick Ca", "/kick carol ")
        # My own name, and nothing at all, are not completed: Tab moves on as it always does.
        typed("ali")
        box.press("Tab")
        expect(box).to_have_value("ali")
        expect(page.get_by_role("button", name="Send")).to_be_focused()
    for member in others:
        member.close()


# -- resuming after a lost connection --


@dataclass
class Cut:
    """The page's connections, through playwright: the first one can be cut; the page's hello on
    the next one is held until the test lets it through."""

    page_sides: list[WebSocketRoute] = field(default_factory=list)
    room_sides: list[WebSocketRoute] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    sent: list[dict[str, object]] = field(default_factory=list)  # by the page, in order

    def route(self, page_side: WebSocketRoute) -> None:
        room_side = page_side.connect_to_server()
        self.page_sides.append(page_side)
        self.room_sides.append(room_side)
        rejoin = len(self.page_sides) > 1

        def from_page(frame: str | bytes) -> None:
            assert isinstance(frame, str)
            self.sent.append(json.loads(frame))
            if rejoin and self.sent[-1]["type"] == "hello":
                self.held.append(frame)
            else:
                room_side.send(frame)

        page_side.on_message(from_page)

    def release(self) -> None:
        """Let the held hello through."""
        self.room_sides[-1].send(self.held.pop())


def entries(page: Page) -> list[tuple[str, str]]:
    """Every row of the log: its kind ("message", "system", ...) and what it says."""
    rows = page.eval_on_selector_all(
        "#messages .entry",
        "rows => rows.map(row => [row.classList[1], row.querySelector('.body').textContent])",
    )
    return [(kind, text) for kind, text in rows]


@pytest.mark.parametrize(
    ("resume_max", "missed", "summary"),
    [
        (1000, 3, "While you were away: 3 messages"),
        (2, 5, "While you were away: 5 messages (the oldest 3 are not shown)"),
    ],
)
def test_a_rejoin_resumes_after_the_last_message_seen(
    browser: Browser, tmp_path: Path, resume_max: int, missed: int, summary: str
) -> None:
    history = {"resume_max": resume_max}
    with serve_room(tmp_path, history=history) as room, open_tab(browser, room.url) as tab:
        carol = TerminalMember(room.port, "carol")
        page = tab.page
        cut = Cut()
        page.route_web_socket(re.compile(r"/ws$"), cut.route)
        log_in(page, "alice")
        carol.say("before")
        seen = carol.wait_for(Message)
        wait_for_delivered(page, 1)
        cut.page_sides[0].close()  # the network drops
        expect(page.locator("#messages .error .body")).to_have_text(
            ["Connection lost: the server closed the connection"]
        )
        pump(page, lambda: cut.held)  # the page is back, its hello not through yet
        said = [f"while away {n}" for n in range(missed)]
        for text in said:
            carol.say(text)
        for _ in said:
            carol.wait_for(Message)
        say(page, "typed while away")
        expect(page.locator("#state")).to_have_text("1 waiting · reconnecting 1/8")
        cut.release()
        expect(page.locator("#messages .resume .body")).to_have_text([summary])
        assert carol.wait_for(Message).text == "typed while away"
        wait_for_delivered(page, 2 + min(missed, resume_max))

        hellos = [frame for frame in cut.sent if frame["type"] == "hello"]
        assert len(hellos) == 2 and "since" not in hellos[0]
        assert hellos[1]["since"] == seen.seq
        # After the cut: the line typed meanwhile where it was typed, then what was missed,
        # counted first, each once.
        shown = entries(page)
        start = shown.index(("error", "Connection lost: the server closed the connection"))
        after = [text for kind, text in shown[start:] if kind in ("message", "resume", "system")]
        assert after == [
            "alice: typed while away ✓",
            "Reconnected.",
            summary,
            *(f"carol: {text}" for text in said[-resume_max:]),
        ]
        # Each message once; the room has alice's line once, after what she missed.
        assert [r.text for r in message_rows(page)] == [
            "before",
            "typed while away",
            *said[-resume_max:],
        ]
        assert [e.text for e in carol.events if isinstance(e, Message)] == [
            "before",
            *said,
            "typed while away",
        ]
        expect(page.locator("#state")).to_have_text("connected")
        carol.close()


# -- personal invites --


def test_a_personal_invite_link_logs_in_without_the_password(browser: Browser, room: Room) -> None:
    issued = room.control("invite", "uses=1")
    assert isinstance(issued, InviteIssued)
    link = f"{room.url}#invite={quote(issued.token, safe='')}"
    carol = TerminalMember(room.port, "carol")
    with open_tab(browser, link, viewport=PHONE) as first:
        page = first.page
        cut = Cut()
        page.route_web_socket(re.compile(r"/ws$"), cut.route)
        expect(page.get_by_text("You have a personal invite: no password needed.")).to_be_visible()
        expect(page.get_by_label("Room password")).to_be_hidden()
        page.get_by_label("Your name").fill("dana")
        page.get_by_label("Your name").press("Enter")
        expect(page.locator("#chat")).to_be_visible()
        carol.wait_for(Join, lambda join: join.name == "dana")
        hello = {
            "type": "hello",
            "version": 1,
            "name": "dana",
            "password": "",
            "invite": issued.token,
        }
        assert cut.sent[0] == hello
        # A dropped connection rejoins with the same invite, which the room lets in again.
        cut.page_sides[0].close()
        pump(page, lambda: cut.held)
        cut.release()
        expect(page.locator("#messages .system .body").last).to_have_text("Reconnected.")
        rejoin = {**hello, "since": 0, "room": "friends"}  # back to the room it was in
        assert [f for f in cut.sent if f["type"] == "hello"] == [hello, rejoin]

    # The invite was for one use: the same link again is refused, and the password offered.
    with open_tab(browser, link, viewport=PHONE) as second:
        page = second.page
        sent = frames_sent(page)
        page.get_by_label("Your name").fill("eve")
        page.get_by_label("Your name").press("Enter")
        error = page.locator("#login-error")
        expect(error).to_have_text(
            "that invite is not valid (used up, expired, revoked or mistyped)"
        )
        password = page.get_by_label("Room password")
        expect(password).to_be_visible()
        expect(password).to_be_focused()
        expect(page.get_by_text("You have a personal invite")).to_be_hidden()
        password.fill(PASSWORD)
        password.press("Enter")
        expect(page.locator("#chat")).to_be_visible()
        carol.wait_for(Join, lambda join: join.name == "eve")
        assert [f.get("invite") for f in sent if f["type"] == "hello"] == [issued.token, None]
        hellos = [f for f in sent if f["type"] == "hello"]
        assert hellos[-1]["password"] == PASSWORD
    carol.close()


def test_rooms_and_join_from_the_page(browser: Browser, tmp_path: Path) -> None:
    with serve_room(tmp_path, rooms=("games",)) as room:
        carol = TerminalMember(room.port, "carol", room="games")
        with open_tab(browser, room.url) as tab:
            page = tab.page
            log_in(page, "ann")
            expect(page.locator("#room-name")).to_have_text("friends")
            say(page, "/rooms")
            expect(page.locator("#messages")).to_contain_text("friends (you are here), 1 online")
            expect(page.locator("#messages")).to_contain_text("games, 1 online")
            say(page, "before the move")
            say(page, "/join games")
            expect(page.locator("#room-name")).to_have_text("games")
            expect(page.locator("#messages")).to_contain_text(
                "Welcome to games, ann! Online: carol, ann"
            )
            expect(page.locator("#count")).to_have_text("2")
            say(page, "hello games")
            heard = carol.wait_for(Message, lambda m: m.sender == "ann")
            assert heard.text == "hello games", "the line typed before went to friends"
            say(page, "/join nowhere")
            expect(page.locator("#messages")).to_contain_text(
                "there is no room called 'nowhere' here; /rooms lists them"
            )
            expect(page).to_have_title("games · multichat")
        carol.close()


def test_a_link_to_a_room_joins_it(browser: Browser, tmp_path: Path) -> None:
    with serve_room(tmp_path, rooms=("games",)) as room:
        carol = TerminalMember(room.port, "carol", room="games")
        with open_tab(browser, f"{room.url}#room=games") as tab:
            page = tab.page
            expect(page.locator("#login-title")).to_have_text("Join games")
            log_in(page, "ann")
            expect(page.locator("#room-name")).to_have_text("games")
            say(page, "straight in")
            heard = carol.wait_for(Message, lambda m: m.sender == "ann")
        with open_tab(browser, f"{room.url}#room=nowhere") as tab:
            tab.page.get_by_label("Room password").fill(PASSWORD)
            tab.page.get_by_label("Your name").fill("bob")
            tab.page.get_by_label("Your name").press("Enter")
            expect(tab.page.locator("#login-error")).to_contain_text("no room called 'nowhere'")
            expect(tab.page.locator("#chat")).to_be_hidden()
        carol.close()
    assert heard.text == "straight in"


def test_a_rejoin_after_a_move_goes_back_to_the_room_it_moved_to(
    browser: Browser, tmp_path: Path
) -> None:
    with serve_room(tmp_path, rooms=("games",)) as room, open_tab(browser, room.url) as tab:
        carol = TerminalMember(room.port, "carol", room="games")
        page = tab.page
        cut = Cut()
        page.route_web_socket(re.compile(r"/ws$"), cut.route)
        log_in(page, "alice")
        say(page, "/join games")
        expect(page.locator("#room-name")).to_have_text("games")
        carol.wait_for(Join)
        carol.say("before")
        wait_for_delivered(page, 1)
        cut.page_sides[0].close()  # the network drops
        pump(page, lambda: cut.held)
        carol.say("while away")
        carol.wait_for(Message, lambda m: m.text == "while away")
        cut.release()
        expect(page.locator("#messages .resume .body")).to_have_text(
            ["While you were away: 1 message"]
        )
        hellos = [frame for frame in cut.sent if frame["type"] == "hello"]
        assert "room" not in hellos[0] and hellos[1]["room"] == "games"
        assert [r.text for r in message_rows(page)] == ["before", "while away"]
        expect(page.locator("#room-name")).to_have_text("games")
        carol.close()
