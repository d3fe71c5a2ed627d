"""Pipe mode: each stdin line is a message, each event one plain line on stdout.

For scripts, bots, tests and terminals too simple for the full interface (`--plain`). The lines
look like the server's plain-text mode (`[12:03] alice: hi`, `[12:03] bob -> alice: psst`,
`[12:03] * carol waves`, `* bob joined`); slash commands work as in the terminal interface. At
end of input the client waits until the room has acknowledged every line it sent, then leaves.
"""

from __future__ import annotations

import dataclasses
from typing import TextIO, TypeVar

import trio

from ..protocol import textmode
from ..protocol.errors import LocalProtocolError
from ..protocol.events import Event, Message, Notice
from ..protocol.sanitize import MAX_TEXT_CHARS, clean_for_terminal, too_long
from . import commands
from .connection import ChatClient
from .updates import Ending, Joined, Lost, NotSent, Update

# A refused line is quoted back this far, enough to recognise it.
QUOTE_CHARS = 40

T = TypeVar("T")


def _one(text: str) -> str:
    return clean_for_terminal(text, single_line=True)


def _online(names: tuple[str, ...] | list[str]) -> str:
    return f"Online ({len(names)}): {', '.join(_one(n) for n in names)}"


def clean(value: T) -> T:
    """`value` with every string in it safe for a terminal: names, reasons and topics on one
    line; a message's or a notice's text keeps its line breaks."""
    if isinstance(value, str):
        return _one(value)  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(clean(item) for item in value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: clean(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
        if isinstance(value, Message | Notice):
            changes["text"] = clean_for_terminal(value.text)
        return dataclasses.replace(value, **changes)
    return value


def render(event: Event | Update) -> str | None:
    """The plain line(s) for one event, sanitised; None for events with nothing to show.

    The room's events read as they do to `nc` (the server's plain-text mode says them the
    same way), so a script can read either.
    """
    match event:
        case Joined(welcome, rejoined, missed, _):
            if rejoined:
                away = f"; while you were away: {missed} messages" if missed else ""
                return f"* Reconnected to {_one(welcome.room)} as {_one(welcome.name)}{away}"
            topic = f"\n* Topic: {_one(welcome.topic)}" if welcome.topic else ""
            return (
                f"* Welcome to {_one(welcome.room)}, {_one(welcome.name)}! "
                f"{_online(welcome.members)}{topic}"
            )
        case Lost(reason, attempt, tries, delay):
            return f"* {_one(reason)}; reconnecting in {delay:.0f} s (try {attempt} of {tries})"
        case NotSent(line, error):
            quoted = _one(line.text)
            if len(quoted) > QUOTE_CHARS:
                quoted = quoted[: QUOTE_CHARS - 3] + "..."
            return f"! not sent ({_one(error.message)}): {quoted}"
    try:
        text = textmode.render(clean(event)).decode("utf-8")
    except LocalProtocolError:  # not something a member is sent (a status, a client event)
        return None
    return text.removesuffix("\n") or None


def help_lines() -> list[str]:
    rows = (*commands.HELP, *commands.OPERATOR_HELP)
    return [f"* {usage}: {meaning}" for usage, meaning in rows]


class Printer:
    """The listener of a client in pipe mode: one line per event, flushed at once."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Event | Update) -> None:
        line = render(event)
        if line is not None:
            self.print(line)

    def print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


async def read_lines(client: ChatClient, stdin: TextIO, printer: Printer) -> None:
    """Send what is typed or piped in; at end of input, wait for every echo, then quit."""
    while True:
        raw = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
        if not raw:
            break
        match commands.parse(raw.rstrip("\r\n")):
            case commands.Send(text) if too_long(text):
                # Longer than any room takes, and than a frame carries: refused here.
                printer.print(f"! not sent ({len(text)} characters; at most {MAX_TEXT_CHARS})")
            case commands.Send(text, to, action):
                client.say_nowait(text, to=to, action=action)
            case commands.Ask(request):
                if not client.request_nowait(request):
                    printer.print("! not connected; try again once reconnected")
            case commands.QuitCommand():
                break
            case commands.HelpCommand():
                for line in help_lines():
                    printer.print(line)
            case commands.Invalid(message):
                printer.print(f"! {_one(message)}")
    await client.wait_acknowledged()
    client.quit_nowait()


async def run_pipe(client: ChatClient, stdin: TextIO, stdout: TextIO) -> Ending:
    """Chat through `stdin` and `stdout` until input ends, the room closes, or the link is lost.

    `client` must have joined; its welcome is printed first.
    """
    printer = Printer(stdout)
    client.listener = printer
    printer(Joined(client.roster.welcome_now()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_lines, client, stdin, printer)
        ending = await client.run()
        nursery.cancel_scope.cancel()
    return ending
