"""The commands people type, one grammar wherever they are typed.

A member in plain-text mode (`nc`), the terminal client and the host's console all read
`/msg bob hi` or `ban 203.0.113.5 --for 1h spam` the same way: `parse` turns one typed command
into the client event it asks for, or raises `CommandError` with the usage. Pure.
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError
from .events import (
    Away,
    Back,
    ClientEvent,
    Help,
    JoinRoom,
    ListRooms,
    Moderate,
    Nick,
    Quit,
    Say,
    SetTopic,
    Who,
)

# What members may type, for /help everywhere.
HELP = (
    ("/msg NAME TEXT", "a private message to NAME"),
    ("/me TEXT", "an action: * you TEXT"),
    ("/nick NAME", "change your name"),
    ("/away [TEXT]", "say you are away (and why); /back when you return"),
    ("/who", "who is online, who is away, who are operators"),
    ("/rooms", "the rooms here: how many are in each, and its topic"),
    ("/join ROOM", "move to another room"),
    ("/help", "this list"),
    ("/quit or tata", "leave the room"),
    ("//TEXT", "a message that starts with '/'"),
)
# What operators may type too (and the host, without the slash, on its console).
OPERATOR_HELP = (
    ("/topic TEXT", "set the room's topic"),
    ("/kick NAME [REASON]", "remove NAME from the room"),
    ("/ban NAME|ADDRESS [--for DURATION] [REASON]", "remove and keep out (30s, 10m, 2h, 1d)"),
    ("/unban NAME|ADDRESS", "lift a ban"),
    ("/mute NAME [--for DURATION]", "NAME may read but not say"),
    ("/unmute NAME", "lift a mute"),
    ("/lock, /unlock", "refuse or accept newcomers"),
    ("/op NAME, /deop NAME", "make NAME an operator, or not"),
    ("/bans", "list the bans"),
)
# Units people write after a number; a week is the longest anyone types.
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# A year: longer is "until lifted", which is what leaving out --for says.
MAX_DURATION = 366 * 86400.0
_MODERATION = frozenset({"kick", "ban", "unban", "mute", "unmute", "op", "deop"})
_BARE = {"lock": "lock", "unlock": "unlock", "bans": "bans"}


class CommandError(RemoteProtocolError):
    """A typed command that does not parse; the message says how to type it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "bad_command")


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `10m`, `2h`, `1d`, `1w` or a sum such as `1h30m`."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise CommandError(f"{text!r} is not a duration; try 30s, 10m, 2h or 1d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds <= MAX_DURATION:
        raise CommandError(f"{text!r}: a duration is more than 0 and at most a year")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits: `90` is `1m`, `7200` is `2h`."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(1, int(seconds))}s"


def _take_duration(words: list[str]) -> float | None:
    """`--for DURATION` (or `--for=DURATION`) anywhere in `words`, removed from them."""
    for i, word in enumerate(words):
        if word == "--for":
            if i + 1 >= len(words):
                raise CommandError("--for needs a duration, such as 10m")
            seconds = parse_duration(words[i + 1])
            del words[i : i + 2]
            return seconds
        if word.startswith("--for="):
            del words[i]
            return parse_duration(word.removeprefix("--for="))
    return None


def parse(line: str) -> ClientEvent:
    """The event one typed command asks for (`/` optional). Raises CommandError."""
    text = line.strip().removeprefix("/")
    name, _, rest = text.partition(" ")
    command = name.lower()
    rest = rest.strip()
    match command:
        case "msg" | "m" | "tell":
            target, message = split_target(rest)
            if not target or not message.strip():
                raise CommandError('usage: /msg NAME TEXT (quote a name with spaces: "Ann B")')
            return Say(message.strip(), to=target)
        case "me":
            if not rest:
                raise CommandError("usage: /me TEXT")
            return Say(rest, action=True)
        case "nick":
            if not rest:
                raise CommandError("usage: /nick NAME")
            return Nick(rest.strip('"'))
        case "away":
            return Away(rest)
        case "back":
            return Back()
        case "topic":
            return SetTopic(rest)
        case "who" | "names":
            return Who()
        case "help" | "?":
            return Help()
        case "rooms" | "list":
            return ListRooms()
        case "join" | "j":
            room = rest.strip('"').strip()
            if not room:
                raise CommandError("usage: /join ROOM (/rooms lists them)")
            return JoinRoom(room)
        case "quit" | "exit":
            return Quit("quit")
        case _ if command in _BARE:
            return Moderate(_BARE[command])
        case _ if command in _MODERATION:
            return _moderation(command, rest)
    raise CommandError(f"unknown command /{name[:20]}; /help lists them")


def split_target(rest: str) -> tuple[str, str]:
    """The first word of `rest` (or a "quoted name" with spaces) and what follows it."""
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            raise CommandError('a quoted name needs its closing "')
        return rest[1:end], rest[end + 1 :].strip()
    target, _, after = rest.partition(" ")
    return target, after.strip()


def take_room(words: list[str]) -> str | None:
    """`--room NAME` (or `--room=NAME`) anywhere in `words`, removed from them: which room a
    host's command is for (`multichat lock --room den`)."""
    for i, word in enumerate(words):
        if word == "--room":
            if i + 1 >= len(words):
                raise CommandError("--room needs a room's name")
            room = words[i + 1]
            del words[i : i + 2]
            return room
        if word.startswith("--room="):
            del words[i]
            return word.removeprefix("--room=")
    return None


def _moderation(command: str, rest: str) -> Moderate:
    target, after = split_target(rest)
    return moderation(command, [target, *after.split()] if target else [])


def moderation(command: str, words: list[str]) -> Moderate:
    """A moderation command from its words: the target first, then `--for` and a reason.

    The host's `multichat kick NAME ...` sends its words as they are, so a name with spaces
    arrives whole. Raises CommandError.
    """
    if command in _BARE:
        return Moderate(_BARE[command])
    if command not in _MODERATION:
        raise CommandError(f"unknown command {command[:20]!r}")
    words = list(words)
    seconds = _take_duration(words) if command in ("ban", "mute") else None
    if not words or not words[0]:
        what = "NAME|ADDRESS" if command in ("ban", "unban") else "NAME"
        extra = " [--for DURATION]" if command in ("ban", "mute") else ""
        reason = " [REASON]" if command in ("ban", "kick") else ""
        raise CommandError(f"usage: /{command} {what}{extra}{reason}")
    target, reason = words[0], " ".join(words[1:])
    if reason and command not in ("kick", "ban"):
        raise CommandError(f"/{command} takes a name and nothing more")
    return Moderate(command, target, reason, seconds)
