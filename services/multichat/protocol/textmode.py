"""Plain-text mode: how multichat/1 looks to `nc`, `telnet` and the original `client.py`.

Server events become human lines (`[12:03] alice: hi`, `* bob joined`); a typed line becomes a
client event. Pure and stateless; `protocol.py` decides when each applies.
"""

from __future__ import annotations

import time

from .errors import LocalProtocolError
from .events import (
    AskName,
    ClientEvent,
    Error,
    Event,
    Join,
    Leave,
    Members,
    Message,
    Ping,
    Pong,
    Quit,
    Say,
    Shutdown,
    Status,
    Welcome,
    Who,
)

PASSWORD_PROMPT = b"Password: "
NAME_PROMPT = b"Name: "
# The original project's exit word; `/quit` for people who expect a slash command.
QUIT_WORDS = frozenset({"tata", "/quit"})
# Continuation lines of a multi-line message line up under the text, past "[12:03] ".
_INDENT = "        "


def clock(ts: float) -> str:
    """`HH:MM` in the server's local time."""
    return time.strftime("%H:%M", time.localtime(ts))


def render(event: Event) -> bytes:
    """The text-mode bytes of one server event (empty for events plain text has no use for)."""
    match event:
        case Message(_, ts, sender, text):
            body = text.replace("\n", "\n" + _INDENT)
            return f"[{clock(ts)}] {sender}: {body}\n".encode()
        case Join(name):
            return f"* {name} joined\n".encode()
        case Leave(name, reason):
            return f"* {name} left ({reason})\n".encode()
        case Welcome(name, room, members):
            others = ", ".join(members)
            return (
                f"Welcome to {room}, {name}! Online ({len(members)}): {others}\n"
                "Type a line to send it; type tata to leave.\n"
            ).encode()
        case Members(names):
            return f"* Online ({len(names)}): {', '.join(names)}\n".encode()
        case Error(_, message):
            return f"! {message}\n".encode()
        case Shutdown(reason):
            return (
                f"* The room is closing: {reason}\n".encode()
                if reason
                else b"* The room is closing.\n"
            )
        case AskName():
            return NAME_PROMPT
        case Ping() | Pong():
            return b""
        case Status():
            raise LocalProtocolError("status is only answered to JSON control connections")
    raise LocalProtocolError(f"{type(event).__name__} is not a server event")


def parse_line(line: str) -> ClientEvent | None:
    """What a member typed, once joined; None for a blank line, which says nothing."""
    command = line.strip()
    if not command:
        return None
    if command.lower() in QUIT_WORDS:
        return Quit("quit")
    if command.lower() == "/who":
        return Who()
    return Say(line)
