"""The terminal interface: a message pane, a status line and an input line, on urwid.

urwid owns the screen and runs on trio (`urwid.TrioEventLoop`), in the same run as the client,
so a message arriving while someone types is drawn in the pane and never lands in the line being
typed. Nothing here reads the terminal itself: urwid's display does, the right way for each
platform. Every string from the network is cleaned (`sanitize.clean_for_terminal`) before it
becomes a widget, so nothing a peer sends can move the cursor, recolour or retitle the screen.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import trio
import urwid

from ..protocol.events import Error, Event, Join, Leave, Members, Message, Shutdown
from ..protocol.sanitize import MAX_TEXT_CHARS, clean_for_terminal, too_long
from ..protocol.textmode import clock
from . import commands
from .connection import ChatClient, Ending, Joined, Lost, NotSent, Update

# After the room closes or the connection is given up, the reason stays on screen this long
# (or until a key is pressed) before the terminal is handed back.
LINGER_SECONDS = 3.0
# Up/Down recall this many earlier lines; shells keep more, a chat needs few.
HISTORY_LINES = 200
# The pane keeps this many rows; older ones go, so a day-long session stays small.
MAX_ROWS = 5000
# A long line being typed scrolls within this many rows, so the conversation stays in view.
INPUT_ROWS = 5
# Width of the timestamp column, "12:03" and a space.
TS_COLUMNS = 6

# Readable on dark and light backgrounds alike; 16-colour names work on every terminal.
NAME_COLOURS = (
    "light red",
    "light green",
    "light blue",
    "light magenta",
    "light cyan",
    "yellow",
    "dark cyan",
    "dark magenta",
)
PALETTE: list[tuple[str, str, str]] = [
    ("ts", "dark gray", "default"),
    ("me", "white,bold", "default"),
    ("pending", "dark gray", "default"),
    ("sent", "dark green", "default"),
    ("failed", "light red", "default"),
    ("join", "dark green", "default"),
    ("leave", "brown", "default"),
    ("system", "dark cyan", "default"),
    ("error", "light red", "default"),
    ("shutdown", "white,bold", "dark red"),
    ("prompt", "white,bold", "default"),
    ("status", "black", "light gray"),
    ("status warn", "black", "yellow"),
    ("status bad", "white,bold", "dark red"),
    ("unread", "black,bold", "yellow"),
] + [(f"name{i}", colour, "default") for i, colour in enumerate(NAME_COLOURS)]


def _one(text: str) -> str:
    return clean_for_terminal(text, single_line=True)


def name_attr(name: str) -> str:
    """The palette entry for `name`: the same colour in every client and every session."""
    return f"name{zlib.crc32(name.casefold().encode('utf-8')) % len(NAME_COLOURS)}"


def _marks() -> tuple[str, str, str, str]:
    """Pending, sent, joined and left marks; ASCII where the terminal is not UTF-8."""
    if urwid.get_encoding_mode() == "utf8":
        return " …", " ✓", "→", "←"
    return " ...", " +", "->", "<-"


Markup = Any  # urwid's text markup: str, (attr, markup) or a list of those


class Row(urwid.WidgetWrap[urwid.Columns]):
    """One entry of the pane: a timestamp column, then text that wraps under itself."""

    def __init__(self, ts: float, markup: Markup) -> None:
        self._ts = urwid.Text(("ts", clock(ts)))
        self._text = urwid.Text(markup)
        super().__init__(urwid.Columns([(TS_COLUMNS, self._ts), self._text]))

    def update(self, ts: float, markup: Markup) -> None:
        self._ts.set_text(("ts", clock(ts)))
        self._text.set_text(markup)

    @property
    def text(self) -> str:
        return str(self._text.text)


class MessagePane(urwid.ListBox[int]):
    """The scrolling messages. Follows new rows while the reader is at the bottom only."""

    def __init__(self) -> None:
        self.walker: urwid.SimpleFocusListWalker[Row] = urwid.SimpleFocusListWalker([])
        super().__init__(self.walker)
        self.size: tuple[int, int] | None = None  # as last rendered
        self.following = True  # the reader is at the bottom: keep showing the newest row
        self.unread = 0

    def render(self, size: tuple[int, int], focus: bool = False) -> urwid.Canvas:  # type: ignore[override]
        self.size = size
        if self.following and self.walker:
            # Also after a resize: a reader at the bottom stays there.
            self.walker.set_focus(len(self.walker) - 1)
            self.set_focus_valign("bottom")
        return super().render(size, focus)

    def at_bottom(self) -> bool:
        if not self.walker or self.size is None:
            return True
        last = self.focus_position == len(self.walker) - 1
        return last and "bottom" in self.ends_visible(self.size)

    def add(self, row: Row) -> None:
        self.walker.append(row)
        if len(self.walker) > MAX_ROWS:
            del self.walker[0]
        if self.following:
            self.to_bottom()
        else:
            self.unread += 1

    def to_bottom(self) -> None:
        self.following = True
        self.unread = 0
        if self.walker:
            self.walker.set_focus(len(self.walker) - 1)
            self.set_focus_valign("bottom")

    def scroll(self, key: str) -> None:
        """PageUp / PageDown; reaching the bottom again counts everything as read."""
        if self.size is None or not self.walker:
            return
        self.keypress(self.size, key)
        if self.at_bottom():
            self.to_bottom()
        else:
            self.following = False


class InputLine(urwid.Edit):
    """The line being typed, with Up/Down history; a long one scrolls within a few rows."""

    def rows(self, size: tuple[int], focus: bool = False) -> int:
        return min(super().rows(size, focus), INPUT_ROWS)

    def _top(self, size: tuple[int]) -> int:
        """The first of the edit's rows that is shown: the cursor's row stays in view."""
        total = super().rows(size, True)
        cursor = super().get_cursor_coords(size)
        row = cursor[1] if cursor else total - 1
        return max(0, min(row - INPUT_ROWS + 1, total - INPUT_ROWS))

    def render(self, size: tuple[int], focus: bool = False) -> urwid.Canvas:  # type: ignore[override]
        canvas = super().render(size, focus)
        if canvas.rows() <= INPUT_ROWS:
            return canvas
        cropped = urwid.CompositeCanvas(canvas)
        cropped.trim(self._top(size), INPUT_ROWS)
        return cropped

    def get_cursor_coords(self, size: tuple[int]) -> tuple[int, int] | None:
        cursor = super().get_cursor_coords(size)
        return None if cursor is None else (cursor[0], cursor[1] - self._top(size))

    def __init__(self, caption: Markup) -> None:
        super().__init__(caption)
        self.history: list[str] = []
        self._back = 0  # 0: the draft; n: the n-th line back
        self._draft = ""

    def remember(self, line: str) -> None:
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_LINES]
        self._back = 0
        self._draft = ""

    def recall(self, key: str) -> None:
        if self._back == 0:
            self._draft = self.edit_text
        step = 1 if key == "up" else -1
        self._back = max(0, min(len(self.history), self._back + step))
        text = self._draft if self._back == 0 else self.history[-self._back]
        self.set_edit_text(text)
        self.set_edit_pos(len(text))


class ChatScreen(urwid.WidgetWrap[urwid.Frame[MessagePane, None, urwid.Pile]]):
    """Everything on screen, and what keys and room events do to it."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.pane = MessagePane()
        self.status = urwid.Text("", wrap="ellipsis")
        self.notice = urwid.Text("", align="right", wrap="ellipsis")
        self.status_bar = urwid.AttrMap(
            urwid.Columns([self.status, ("pack", self.notice)], dividechars=1), "status"
        )
        self.input = InputLine(("prompt", f"{_one(client.name)}> "))
        footer = urwid.Pile([self.status_bar, self.input])
        super().__init__(urwid.Frame(self.pane, footer=footer, focus_part="footer"))
        self.sending: dict[str, Row] = {}  # own lines waiting for their echo, by id
        self.lost: Lost | None = None
        self.ending: Ending | None = None
        self.key_after_end = trio.Event()
        self._pasting = False
        self.mark_pending, self.mark_sent, self.mark_join, self.mark_leave = _marks()
        self.refresh_status()

    # -- the pane --

    def add(self, markup: Markup, ts: float | None = None) -> Row:
        row = Row(ts or time.time(), markup)
        self.pane.add(row)
        self.refresh_status()
        return row

    def system(self, text: str, attr: str = "system") -> None:
        self.add((attr, text))

    def _name(self, name: str) -> Markup:
        shown = _one(name)
        return ("me", shown) if name == self.client.name else (name_attr(name), shown)

    def _message(self, message: Message) -> Markup:
        markup: list[Markup] = [self._name(message.sender), ": ", clean_for_terminal(message.text)]
        if message.id is not None:
            markup.append(("sent", self.mark_sent))
        return markup

    def on_event(self, event: Event | Update) -> None:
        """The client's listener: show one event from the room or the connection."""
        match event:
            case Message(_, ts, _, _, id):
                row = self.sending.pop(id, None) if isinstance(id, str) else None
                if row is not None:
                    row.update(ts, self._message(event))
                else:
                    self.add(self._message(event), ts)
            case Join(name, ts):
                self.add(("join", f"{self.mark_join} {_one(name)} joined"), ts)
            case Leave(name, reason, ts):
                self.add(("leave", f"{self.mark_leave} {_one(name)} left ({_one(reason)})"), ts)
            case Members(names):
                self.system(f"Online ({len(names)}): {', '.join(_one(n) for n in names)}")
            case Error(_, message):
                self.system(_one(message), "error")
            case Shutdown(reason):
                text = f"The room is closing: {_one(reason)}" if reason else "The room is closing."
                self.system(f" {text} ", "shutdown")
            case Joined(welcome, rejoined):
                self.lost = None
                room = _one(welcome.room)
                if rejoined:
                    self.system(f"Reconnected to {room}.")
                else:
                    online = ", ".join(_one(n) for n in welcome.members)
                    self.system(f"Welcome to {room}, {_one(welcome.name)}! Online: {online}")
                    self.system("Type a message and press Enter. /help lists commands.")
            case Lost(reason, attempt):
                self.lost = event
                if attempt == 1:
                    self.system(f"Connection lost: {_one(reason)}", "error")
            case NotSent(line, error):
                row = self.sending.pop(line.id, None)
                text = f"not sent: {_one(error.message)}"
                if row is not None:
                    failed = [self._name(self.client.name), ": ", ("failed", _one(line.text))]
                    row.update(time.time(), [*failed, ("failed", f"  ({text})")])
                else:
                    self.system(text, "error")
        self.refresh_status()

    def show_ending(self, ending: Ending) -> None:
        """The run is over: say why, and that any key closes the window."""
        self.ending = ending
        if ending.why in ("lost", "kicked"):
            self.system(_one(ending.reason), "error")
        self.refresh_status()

    # -- the status line --

    def refresh_status(self) -> None:
        """Room, address and members on the left; what needs attention on the right."""
        client = self.client
        parts = [_one(client.room) or "multichat", str(client.address)]
        if client.state == "connected" and self.ending is None:
            parts.append(f"{len(client.members)} online")
        self.status.set_text(" " + " · ".join(parts))
        notes: list[Markup] = []
        if self.pane.unread:
            more = "s" if self.pane.unread > 1 else ""
            notes.append(("unread", f" {self.pane.unread} new message{more} (PageDown) "))
            notes.append(" ")
        if client.pending and client.state != "connected":
            notes.append(f"{client.pending} waiting · ")
        notes.append(self._state())
        self.notice.set_text(notes)

    def _state(self) -> Markup:
        if self.ending is not None:
            closed = {"shutdown": "room closed", "quit": "left"}.get(
                self.ending.why, "disconnected"
            )
            return ("status bad", f" {closed} - press a key ")
        if self.client.state == "connected":
            return "connected "
        if self.lost is not None:
            return (
                "status warn",
                f" connection lost, reconnecting {self.lost.attempt}/{self.lost.tries} ",
            )
        return f"{self.client.state} "

    # -- keys --

    def keypress(self, size: tuple[int, int], key: str) -> str | None:  # type: ignore[override]
        if self.ending is not None:
            self.key_after_end.set()
            return None
        if key in ("page up", "page down"):
            self.pane.scroll(key)
            self.refresh_status()
            return None
        if key in ("up", "down"):
            self.input.recall(key)
            return None
        if key in ("begin paste", "end paste"):
            self._pasting = key == "begin paste"
            return None
        if key == "enter" and self._pasting:
            # A pasted block is one message, not one per line.
            self.input.insert_text("\n")
            return None
        if key == "enter":
            self.submit()
            return None
        if key == "ctrl c" or (key == "ctrl d" and not self.input.edit_text):
            self.client.quit_nowait()
            return None
        if key == "ctrl u":
            self.input.set_edit_text("")
            return None
        if key == "ctrl l":
            self.pane.to_bottom()
            self.refresh_status()
            return None
        return super().keypress(size, key)

    def submit(self) -> None:
        typed = self.input.edit_text
        self.input.set_edit_text("")
        self.input.remember(typed)
        match commands.parse(typed):
            case commands.Send(text):
                self.send(text)
            case commands.QuitCommand():
                self.client.quit_nowait()
            case commands.WhoCommand():
                if not self.client.who_nowait():
                    self.system("Not connected; try /who again once reconnected.", "error")
            case commands.HelpCommand():
                for usage, meaning in (*commands.HELP, *commands.KEYS_HELP):
                    self.system(f"{usage:<18} {meaning}")
            case commands.Unknown(name):
                self.system(f"Unknown command {_one(name)}; /help lists commands.", "error")

    def send(self, text: str) -> None:
        if too_long(text):  # longer than a frame carries: keep it here to shorten
            self.system(f"Too long to send ({len(text)} characters; at most {MAX_TEXT_CHARS}).")
            self.input.set_edit_text(text)
            self.input.set_edit_pos(len(text))
            return
        line = self.client.say_nowait(text)
        markup = [
            self._name(self.client.name),
            ": ",
            ("pending", clean_for_terminal(text)),
            ("pending", self.mark_pending),
        ]
        self.pane.to_bottom()  # sending means reading the latest
        self.sending[line.id] = self.add(markup)


def _exit_loop() -> None:
    raise urwid.ExitMainLoop()


async def run_tui(client: ChatClient, screen: urwid.display.raw.Screen | None = None) -> Ending:
    """Run the interface until the client's run ends; the terminal is restored on return.

    `client` must have joined. After the room closes or the connection is given up, the reason
    stays on screen for `LINGER_SECONDS` or until a key is pressed.
    """
    chat = ChatScreen(client)
    client.listener = chat.on_event
    chat.on_event(Joined(client.welcome_now()))
    # Bracketed paste makes a pasted block one message; terminals without it ignore the request
    # (asking first would miss terminals, tmux among them, that do not answer the query).
    display = screen or urwid.display.raw.Screen(bracketed_paste_mode=True)
    event_loop = urwid.TrioEventLoop()
    loop = urwid.MainLoop(chat, PALETTE, screen=display, event_loop=event_loop, handle_mouse=False)
    ending: Ending | None = None

    async def talk() -> None:
        nonlocal ending
        ending = await client.run()
        if ending.why != "quit":
            chat.show_ending(ending)
            with trio.move_on_after(LINGER_SECONDS):
                await chat.key_after_end.wait()
        event_loop.alarm(0, _exit_loop)

    async with trio.open_nursery() as nursery:
        with loop.start():
            # Ctrl-C, Ctrl-S and Ctrl-Q are keys here (leave; nothing), not signals or flow
            # control; the previous settings come back when the screen stops.
            display.tty_signal_keys(intr="undefined", start="undefined", stop="undefined")
            nursery.start_soon(talk)
            await event_loop.run_async()
        nursery.cancel_scope.cancel()
    assert ending is not None
    return ending
