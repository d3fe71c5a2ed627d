"""What a member types: a message to send, a request for the room, or a command for the client.

Both the terminal interface and pipe mode read lines through `parse`, so every command means the
same everywhere. Slash commands are the room's one grammar (`protocol.commands`: `/msg`, `/me`,
`/nick`, `/away`, `/kick`, `/rooms`, `/join`, ...); the client keeps only what needs no server:
`/help` (the commands and keys, without a round trip), `/quit` and `tata`. A line starting with
`//` sends the rest with one slash, for the rare message that has to start with one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol import commands as grammar
from ..protocol.events import (
    Away,
    Back,
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
from ..protocol.textmode import QUIT_WORDS

HELP = grammar.HELP
OPERATOR_HELP = grammar.OPERATOR_HELP
KEYS_HELP = (
    ("Tab", "complete a name (again: the next one), a /command, or a room after /join"),
    ("Up / Down", "earlier lines you typed"),
    ("PageUp / PageDown", "scroll the messages"),
    ("Ctrl-U", "clear the line"),
    ("Ctrl-L", "jump to the newest message"),
    ("Ctrl-C", "leave"),
)
# Every slash command, for Tab: read off the help tables, so a new command completes too.
COMMAND_NAMES = tuple(
    sorted(
        {
            word
            for usage, meaning in (*HELP, *OPERATOR_HELP)
            for word in re.findall(r"(?<![/\w])/([a-z]+)", f"{usage} {meaning}")
        }
    )
)
# Commands whose first word is a member's name, where Tab completes one (quoted if it has a
# space, as `split_target` reads it).
NAME_COMMANDS = frozenset(
    {"msg", "m", "tell", "kick", "ban", "unban", "mute", "unmute", "op", "deop"}
)
# Commands whose rest is a room's name, where Tab completes one.
JOIN_COMMANDS = frozenset({"/join", "/j"})

# What a member may ask of the room besides sending a line.
Request = Who | Nick | Away | Back | SetTopic | Help | Moderate | ListRooms | JoinRoom


@dataclass(frozen=True)
class Send:
    """Post `text`: to the room, or privately to `to`; `action` for `/me`."""

    text: str
    to: str | None = None
    action: bool = False


@dataclass(frozen=True)
class Ask:
    """Send `request` to the room (`/nick`, `/away`, `/who`, `/kick`, ...)."""

    request: Request


@dataclass(frozen=True)
class QuitCommand:
    """Leave the room."""


@dataclass(frozen=True)
class HelpCommand:
    """Show the commands and keys."""


@dataclass(frozen=True)
class Invalid:
    """A command that does not parse; `message` says how to type it."""

    message: str


Command = Send | Ask | QuitCommand | HelpCommand | Invalid


def parse(line: str) -> Command | None:
    """The command in one typed line; None for a blank line, which does nothing."""
    word = line.strip()
    if not word:
        return None
    lowered = word.lower()
    if lowered in QUIT_WORDS:
        return QuitCommand()
    if lowered in ("/help", "/?"):
        return HelpCommand()
    if word.startswith("//"):
        return Send(line.lstrip()[1:])
    if not (word.startswith("/") and len(word) > 1 and not word[1].isspace()):
        return Send(line)
    try:
        event = grammar.parse(word)
    except grammar.CommandError as exc:
        return Invalid(str(exc))
    match event:
        case Say(text, _, to, action):
            return Send(text, to, action)
        case Quit():
            return QuitCommand()
        case Who() | Nick() | Away() | Back() | SetTopic() | Help() | Moderate():
            return Ask(event)
        case ListRooms() | JoinRoom():
            return Ask(event)
    return Invalid(f"{word.split()[0][:20]} cannot be typed here")
