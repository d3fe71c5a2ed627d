"""The terminal interface: a message pane, a status line and an input line, on urwid.

urwid owns the screen and runs on trio (`urwid.TrioEventLoop`), in the same run as the client,
so a message arriving while someone types is drawn in the pane and never lands in the line being
typed. Nothing here reads the terminal itself: urwid's display does, the right way for each
platform. Every string from the network is cleaned (`sanitize.clean_for_terminal`) before it
becomes a widget, so nothing a peer sends can move the cursor, recolour or retitle the screen.

A line that mentions my name is highlighted and rings the terminal's bell once (unless the
member asked for no bell); Tab completes members' names and commands (`names.py`). The topic
is the window's header line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio
import urwid

from ..protocol.events import (
    BanList,
    CameBack,
    Error,
    Event,
    Join,
    Leave,
    ListRooms,
    Members,
    Message,
    Notice,
    Renamed,
    RoomList,
    Shutdown,
    Topic,
    WentAway,
)
from ..protocol.sanitize import MAX_TEXT_CHARS, clean_for_terminal, too_long
from ..protocol.textmode import describe_ban, describe_members
from . import commands
from .connection import ChatClient
from .names import Completion, complete, mentions
from .outbox import Line
from .reconnect import KICKS
from .tui_widgets import PALETTE, InputLine, Markup, MessagePane, Row, marks, name_attr
from .updates import Ending, Joined, Lost, NotSent, Update

# After the room closes or the connection is given up, the reason stays on screen this long
# (or until a key is pressed) before the terminal is handed back.
LINGER_SECONDS = 3.0
# /help's first column: the common commands line up; the longest usages push their text on.
HELP_COLUMNS = 20


def _one(text: str) -> str:
    return clean_for_terminal(text, single_line=True)


Header = urwid.AttrMap[urwid.Text]
Layout = urwid.Frame[MessagePane, Header, urwid.Pile]


class ChatScreen(urwid.WidgetWrap[Layout]):
    """Everything on screen, and what keys and room events do to it."""

    def __init__(self, client: ChatClient, bell: Callable[[], None] | None = None) -> None:
        self.client = client
        self.bell = bell  # rings the terminal; None: a silent window (--no-bell)
        self.pane = MessagePane()
        self.status = urwid.Text("", wrap="ellipsis")
        self.notice = urwid.Text("", wrap="ellipsis", align="right")
        self.status_bar = urwid.AttrMap(
            urwid.Columns([self.status, ("pack", self.notice)], dividechars=1), "status"
        )
        self.topic = urwid.Text("", wrap="ellipsis")
        self.topic_bar = urwid.AttrMap(self.topic, "topic")
        self.input = InputLine(self._prompt())
        footer = urwid.Pile([self.status_bar, self.input])
        self.frame: Layout = urwid.Frame(self.pane, footer=footer, focus_part="footer")
        super().__init__(self.frame)
        self.sending: dict[str, Row] = {}  # own lines waiting for their echo, by id
        self.lost: Lost | None = None
        self.ending: Ending | None = None
        self.key_after_end = trio.Event()
        self._pasting = False
        # The Tab cycle under way: its options, the one shown, and the line as Tab left it.
        self._completion: tuple[Completion, int, str] | None = None
        self._rooms: tuple[str, ...] = ()  # as the server last listed them, for Tab
        # Messages up to this one are the history shown on joining: a mention there is
        # highlighted, but rings nothing (it may be hours old).
        self.history_seq = client.roster.welcome_seq
        shown = marks()
        self.mark_pending, self.mark_sent, self.mark_join, self.mark_leave = shown[:4]
        self.mark_private = shown[4]
        self.refresh_topic()
        self.refresh_status()

    # -- the pane --

    def add(self, markup: Markup, ts: float | None = None) -> Row:
        row = Row(ts or time.time(), markup)
        self.pane.add(row)
        self.refresh_status()
        return row

    def system(self, text: str, attr: str = "system") -> None:
        self.add((attr, text))

    def _prompt(self) -> Markup:
        return ("prompt", f"{_one(self.client.roster.name)}> ")

    def _name(self, name: str) -> Markup:
        shown = _one(name)
        return ("me", shown) if name == self.client.roster.name else (name_attr(name), shown)

    def _line(
        self, sender: str, text: str, to: str | None, action: bool, attr: str
    ) -> list[Markup]:
        """A message as the pane shows it: `alice: hi`, `* alice waves`, `alice ▸ bob: psst`;
        `attr` styles the text (empty: as its kind is shown)."""
        cleaned = clean_for_terminal(text)
        style = attr or ("action" if action else "")
        body: Markup = (style, cleaned) if style else cleaned
        private: list[Markup] = []
        if to is not None:
            private = [("private", self.mark_private), self._name(to)]
        if action:
            return [("action", "* "), self._name(sender), *private, " ", body]
        return [self._name(sender), *private, ": ", body]

    def _names_me(self, message: Message) -> bool:
        """Someone else's message naming me, or for me alone."""
        me = self.client.roster.name
        return message.sender != me and (message.to == me or mentions(message.text, me))

    def _message(self, message: Message) -> Markup:
        mentioned = self._names_me(message)
        attr = "mention" if mentioned else "private" if message.to is not None else ""
        markup = self._line(message.sender, message.text, message.to, message.action, attr)
        if message.id is not None:
            markup.append(("sent", self.mark_sent))
        return markup

    def _ring(self) -> None:
        if self.bell is not None:
            self.bell()

    def on_event(self, event: Event | Update) -> None:
        """The client's listener: show one event from the room or the connection."""
        match event:
            case Message(seq, ts, _, _, id):
                row = self.sending.pop(id, None) if isinstance(id, str) else None
                if row is not None:
                    row.update(ts, self._message(event))
                else:
                    self.add(self._message(event), ts)
                    if seq > self.history_seq and self._names_me(event):
                        self._ring()
            case Join(name, ts):
                self.add(("join", f"{self.mark_join} {_one(name)} joined"), ts)
            case Leave(name, reason, ts):
                self.add(("leave", f"{self.mark_leave} {_one(name)} left ({_one(reason)})"), ts)
            case Members(names, away, ops):
                listed = describe_members(
                    tuple(_one(n) for n in names),
                    tuple((_one(n), _one(why)) for n, why in away),
                    tuple(_one(n) for n in ops),
                )
                self.system(f"Online ({len(names)}): {listed}")
            case Renamed(old, new, ts):
                self.add(("system", f"{_one(old)} is now known as {_one(new)}"), ts)
                self.input.set_caption(self._prompt())  # ours, if it was us
            case WentAway(name, text):
                self.system(f"{_one(name)} is away" + (f": {_one(text)}" if text else ""))
            case CameBack(name):
                self.system(f"{_one(name)} is back")
            case Topic(text, by):
                said = f"set the topic: {_one(text)}" if text else "cleared the topic"
                self.system(f"{_one(by)} {said}")
                self.refresh_topic()
            case Notice(text, ts):
                for line in text.splitlines() or [""]:
                    self.add(("notice", _one(line)), ts)
            case BanList(bans):
                self.system(f"Bans ({len(bans)}):" if bans else "No bans.")
                for ban in bans:
                    address, name, reason, by = map(
                        _one, (ban.address, ban.name, ban.reason, ban.by)
                    )
                    self.system(f"  {describe_ban(address, name, ban.until, reason, by)}")
            case Error(code, message):
                if code not in KICKS:  # the ending says it, once, when the room closes on us
                    self.system(_one(message), "error")
            case Shutdown(reason):
                text = f"The room is closing: {_one(reason)}" if reason else "The room is closing."
                self.system(f" {text} ", "shutdown")
            case RoomList(rooms):
                self._rooms = tuple(info.name for info in rooms)
                self.system(f"Rooms ({len(rooms)}):")
                for info in rooms:
                    here = " (you are here)" if info.name == self.client.roster.room else ""
                    topic = f": {_one(info.topic)}" if info.topic else ""
                    self.system(f"  {_one(info.name)}{here}, {info.members} online{topic}")
            case Joined(welcome, rejoined, missed, moved):
                self.lost = None
                room = _one(welcome.room)
                self.input.set_caption(self._prompt())
                self.refresh_topic()
                if rejoined:
                    self.system(f"Reconnected to {room}.")
                    if missed:
                        self.system(f"While you were away: {_count(missed)}")
                else:
                    online = ", ".join(_one(n) for n in welcome.members)
                    self.system(f"Welcome to {room}, {_one(welcome.name)}! Online: {online}")
                    if moved:
                        # The new room's recent history follows: a mention there rings nothing.
                        self.history_seq = welcome.seq
                    else:
                        self.system("Type a message and press Enter. /help lists commands.")
            case Lost(reason, attempt):
                self.lost = event
                if attempt == 1:
                    self.system(f"Connection lost: {_one(reason)}", "error")
            case NotSent(line, error):
                row = self.sending.pop(line.id, None)
                text = f"not sent: {_one(error.message)}"
                if row is not None:
                    failed = self._line(
                        self.client.roster.name, line.text, line.to, line.action, "failed"
                    )
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

    # -- the header and the status line --

    def refresh_topic(self) -> None:
        """The topic as the window's first line; no line at all when there is none."""
        topic = self.client.roster.topic
        self.topic.set_text(f" Topic: {_one(topic)}" if topic else "")
        self.frame.header = self.topic_bar if topic else None

    def refresh_status(self) -> None:
        """Room, address and members on the left; what needs attention on the right."""
        client = self.client
        parts = [_one(client.roster.room) or "multichat", str(client.address)]
        if client.state == "connected" and self.ending is None:
            parts.append(f"{len(client.roster.members)} online")
            if client.roster.name in client.roster.away:
                parts.append("you are away (/back)")
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
        if key == "tab" and not self._pasting:
            self.complete()
            return None
        self._completion = None
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

    def complete(self) -> None:
        """Tab: the member name (or /command) being typed; Tab again: the next one."""
        text, cursor = self.input.edit_text, self.input.edit_pos
        cycle = self._completion
        if cycle is not None and cycle[2] == text[:cursor]:
            completion, shown, _ = cycle
            index = (shown + 1) % len(completion.options)
        else:
            typed = text[:cursor]
            found = complete(
                typed, self.client.roster.members, self.client.roster.name, self._rooms
            )
            if found is None:
                if typed.partition(" ")[0].lower() in commands.JOIN_COMMANDS and not self._rooms:
                    # Which rooms there are, the server knows: Tab asks, and shows the list.
                    self.client.request_nowait(ListRooms())
                return
            completion, index = found, 0
        before = text[: completion.start] + completion.options[index]
        self.input.set_edit_text(before + text[cursor:])
        self.input.set_edit_pos(len(before))
        self._completion = (completion, index, before) if len(completion.options) > 1 else None

    def submit(self) -> None:
        typed = self.input.edit_text
        self.input.set_edit_text("")
        self.input.remember(typed)
        match commands.parse(typed):
            case commands.Send(text, to, action):
                self.send(text, to=to, action=action)
            case commands.Ask(request):
                if not self.client.request_nowait(request):
                    self.system("Not connected; try again once reconnected.", "error")
            case commands.QuitCommand():
                self.client.quit_nowait()
            case commands.HelpCommand():
                rows = (*commands.HELP, *commands.OPERATOR_HELP, *commands.KEYS_HELP)
                for usage, meaning in rows:
                    self.system(f"{usage:<{HELP_COLUMNS}} {meaning}")
            case commands.Invalid(message):
                self.system(_one(message), "error")

    def send(self, text: str, *, to: str | None = None, action: bool = False) -> None:
        if too_long(text):  # longer than a frame carries: keep it here to shorten
            self.system(f"Too long to send ({len(text)} characters; at most {MAX_TEXT_CHARS}).")
            self.input.set_edit_text(text)
            self.input.set_edit_pos(len(text))
            return
        line = self.client.say_nowait(text, to=to, action=action)
        self.pane.to_bottom()  # sending means reading the latest
        self.sending[line.id] = self.add(self._pending(line))

    def _pending(self, line: Line) -> Markup:
        markup = self._line(self.client.roster.name, line.text, line.to, line.action, "pending")
        return [*markup, ("pending", self.mark_pending)]


def _exit_loop() -> None:
    raise urwid.ExitMainLoop()


async def run_tui(
    client: ChatClient, screen: urwid.display.raw.Screen | None = None, *, bell: bool = True
) -> Ending:
    """Run the interface until the client's run ends; the terminal is restored on return.

    `client` must have joined. After the room closes or the connection is given up, the reason
    stays on screen for `LINGER_SECONDS` or until a key is pressed. `bell`: a mention rings the
    terminal's bell.
    """
    # Bracketed paste makes a pasted block one message; terminals without it ignore the request
    # (asking first would miss terminals, tmux among them, that do not answer the query).
    display = screen or urwid.display.raw.Screen(bracketed_paste_mode=True)

    def ring() -> None:
        # BEL moves nothing on the screen, so it may go out between urwid's redraws.
        display.write("\a")
        display.flush()

    chat = ChatScreen(client, bell=ring if bell else None)
    client.listener = chat.on_event
    chat.on_event(Joined(client.roster.welcome_now()))
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


def _count(missed: int) -> str:
    return "1 message" if missed == 1 else f"{missed} messages"
