"""Plain-text mode: how multichat/1 looks to `nc`, `telnet` and the original `client.py`.

Server events become human lines (`[12:03] alice: hi`, `* bob joined`); a typed line becomes a
client event. Pure and stateless; `protocol.py` decides when each applies.
"""

from __future__ import annotations

import functools
import time

from . import commands
from .errors import LocalProtocolError
from .events import (
    AskName,
    BanList,
    CameBack,
    ClientEvent,
    Error,
    Event,
    Gap,
    Join,
    Leave,
    Members,
    Message,
    Notice,
    Ping,
    Pong,
    Quit,
    Renamed,
    RoomList,
    Say,
    Shutdown,
    Status,
    Topic,
    Welcome,
    WentAway,
)

PASSWORD_PROMPT = b"Password: "
NAME_PROMPT = b"Name: "
# The original project's exit word; `/quit` for people who expect a slash command.
QUIT_WORDS = frozenset({"tata", "/quit"})
# Continuation lines of a multi-line message line up under the text, past "[12:03] ".
_INDENT = "        "


def clock(ts: float) -> str:
    """`HH:MM` in the server's local time."""
    # By the minute: every line of a burst shares one, and localtime() with strftime() was 5%
    # of a plain-text burst. (Every time zone's offset has been whole minutes since 1972, so
    # a minute since the epoch is one minute of the clock.)
    return _minute_clock(int(ts // 60))


@functools.lru_cache(maxsize=4)
def _minute_clock(minute: int) -> str:
    return time.strftime("%H:%M", time.localtime(minute * 60))


def render(event: Event) -> bytes:
    """The text-mode bytes of one server event (empty for events plain text has no use for)."""
    match event:
        case Message():  # (no positional captures: see wire.to_json)
            body = event.text.replace("\n", "\n" + _INDENT)
            if event.action:
                return f"[{clock(event.ts)}] * {event.sender} {body}\n".encode()
            to = event.to
            who = f"{event.sender} -> {to}" if to is not None else event.sender
            return f"[{clock(event.ts)}] {who}: {body}\n".encode()
        case Join(name):
            return f"* {name} joined\n".encode()
        case Leave(name, reason):
            return f"* {name} left ({reason})\n".encode()
        case Welcome(name, room, members, _, topic):
            others = ", ".join(members)
            about = f"Topic: {topic}\n" if topic else ""
            return (
                f"Welcome to {room}, {name}! Online ({len(members)}): {others}\n{about}"
                "Type a line to send it; /help lists the commands; type tata to leave.\n"
            ).encode()
        case Members(names, away, ops):
            return f"* Online ({len(names)}): {describe_members(names, away, ops)}\n".encode()
        case Renamed(old, new):
            return f"* {old} is now known as {new}\n".encode()
        case WentAway(name, text):
            return f"* {name} is away{': ' + text if text else ''}\n".encode()
        case CameBack(name):
            return f"* {name} is back\n".encode()
        case Topic(text, by):
            return f"* {by} set the topic: {text}\n".encode() if text else b"* no topic\n"
        case RoomList(rooms):
            lines = [f"* Rooms ({len(rooms)}):\n"]
            for info in rooms:
                about = f": {info.topic}" if info.topic else ""
                lines.append(f"*   {info.name} ({info.members} online){about}\n")
            return "".join(lines).encode()
        case Gap(missed):
            return f"* {missed} earlier messages left out\n".encode()
        case Notice(text):
            return "".join(f"* {line}\n" for line in text.splitlines() or [""]).encode()
        case BanList(bans):
            if not bans:
                return b"* No bans.\n"
            return "".join(
                f"* {describe_ban(b.address, b.name, b.until, b.reason, b.by)}\n" for b in bans
            ).encode()
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


def describe_members(
    names: tuple[str, ...], away: tuple[tuple[str, str], ...], ops: tuple[str, ...]
) -> str:
    """`alice (op), bob (away: lunch), carol`."""
    why = dict(away)
    parts = []
    for name in names:
        marks = ["op"] if name in ops else []
        if name in why:
            marks.append(f"away: {why[name]}" if why[name] else "away")
        parts.append(f"{name} ({', '.join(marks)})" if marks else name)
    return ", ".join(parts)


def describe_ban(address: str, name: str, until: float | None, reason: str, by: str) -> str:
    """One ban as people read it."""
    who = f"{name} ({address})" if name else address
    when = f"until {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))}" if until else ""
    return " ".join(p for p in (who, when, f"by {by}" if by else "", reason and f"- {reason}") if p)


def parse_line(line: str) -> ClientEvent | None:
    """What a member typed, once joined; None for a blank line, which says nothing.

    Raises CommandError for a command that does not parse (the session answers it).
    """
    command = line.strip()
    if not command:
        return None
    if command.lower() in QUIT_WORDS:
        return Quit("quit")
    if command.startswith("//"):
        return Say(line.lstrip()[1:])
    if command.startswith("/") and len(command) > 1 and not command[1].isspace():
        return commands.parse(command)
    return Say(line)
