"""Pipe mode: each stdin line is a message, each event one plain line on stdout.

For scripts, bots, tests and terminals too simple for the full interface (`--plain`). The lines
look like the server's plain-text mode (`[12:03] alice: hi`, `* bob joined`); slash commands
work as in the terminal interface. At end of input the client waits until the room has
acknowledged every line it sent, then leaves.
"""

from __future__ import annotations

from typing import TextIO

import trio

from ..protocol.events import Error, Event, Join, Leave, Members, Message, Shutdown
from ..protocol.sanitize import MAX_TEXT_CHARS, clean_for_terminal, too_long
from ..protocol.textmode import clock
from . import commands
from .connection import ChatClient, Ending, Joined, Lost, NotSent, Update

# Continuation lines of a multi-line message line up under the text, past "[12:03] ".
_INDENT = "        "
# A refused line is quoted back this far, enough to recognise it.
QUOTE_CHARS = 40


def _one(text: str) -> str:
    return clean_for_terminal(text, single_line=True)


def _online(names: tuple[str, ...] | list[str]) -> str:
    return f"Online ({len(names)}): {', '.join(_one(n) for n in names)}"


def render(event: Event | Update) -> str | None:
    """The plain line(s) for one event, sanitised; None for events with nothing to show."""
    match event:
        case Message(_, ts, sender, text):
            body = clean_for_terminal(text).replace("\n", "\n" + _INDENT)
            return f"[{clock(ts)}] {_one(sender)}: {body}"
        case Join(name):
            return f"* {_one(name)} joined"
        case Leave(name, reason):
            return f"* {_one(name)} left ({_one(reason)})"
        case Members(names):
            return f"* {_online(names)}"
        case Error(_, message):
            return f"! {_one(message)}"
        case Shutdown(reason):
            return f"* The room is closing: {_one(reason)}" if reason else "* The room is closing."
        case Joined(welcome, rejoined):
            if rejoined:
                return f"* Reconnected to {_one(welcome.room)} as {_one(welcome.name)}"
            return (
                f"* Welcome to {_one(welcome.room)}, {_one(welcome.name)}! "
                f"{_online(welcome.members)}"
            )
        case Lost(reason, attempt, tries, delay):
            return f"* {_one(reason)}; reconnecting in {delay:.0f} s (try {attempt} of {tries})"
        case NotSent(line, error):
            quoted = _one(line.text)
            if len(quoted) > QUOTE_CHARS:
                quoted = quoted[: QUOTE_CHARS - 3] + "..."
            return f"! not sent ({_one(error.message)}): {quoted}"
    return None


def help_lines() -> list[str]:
    return [f"* {usage}: {meaning}" for usage, meaning in commands.HELP]


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
            case commands.Send(text):
                client.say_nowait(text)
            case commands.QuitCommand():
                break
            case commands.WhoCommand():
                if not client.who_nowait():
                    printer.print("! not connected; try again once reconnected")
            case commands.HelpCommand():
                for line in help_lines():
                    printer.print(line)
            case commands.Unknown(name):
                printer.print(f"! unknown command {_one(name)}; /help lists commands")
    await client.wait_acknowledged()
    client.quit_nowait()


async def run_pipe(client: ChatClient, stdin: TextIO, stdout: TextIO) -> Ending:
    """Chat through `stdin` and `stdout` until input ends, the room closes, or the link is lost.

    `client` must have joined; its welcome is printed first.
    """
    printer = Printer(stdout)
    client.listener = printer
    printer(Joined(client.welcome_now()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_lines, client, stdin, printer)
        ending = await client.run()
        nursery.cancel_scope.cancel()
    return ending
