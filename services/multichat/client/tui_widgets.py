"""The terminal interface's pieces: its colours, a row of the message pane, the pane that
follows new rows while its reader is at the bottom, and the input line with its history.

tui.py puts them on one screen and says what keys and the room's events do to them.
"""

from __future__ import annotations

import zlib
from typing import Any

import urwid

from ..protocol.textmode import clock

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
    ("mention", "black", "yellow"),
    ("private", "light magenta", "default"),
    ("action", "light gray,italics", "default"),
    ("notice", "yellow", "default"),
    ("topic", "white", "dark blue"),
] + [(f"name{i}", colour, "default") for i, colour in enumerate(NAME_COLOURS)]


def name_attr(name: str) -> str:
    """The palette entry for `name`: the same colour in every client and every session."""
    return f"name{zlib.crc32(name.casefold().encode('utf-8')) % len(NAME_COLOURS)}"


def marks() -> tuple[str, str, str, str, str]:
    """Pending, sent, joined, left and private marks; ASCII where the terminal is not UTF-8."""
    if urwid.get_encoding_mode() == "utf8":
        return " …", " ✓", "→", "←", " ▸ "
    return " ...", " +", "->", "<-", " -> "


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
