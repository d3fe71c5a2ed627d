"""What a member types: a message to send, or one of the client's slash commands.

Both the terminal interface and pipe mode read lines through `parse`, so `/quit`, `tata`,
`/who` and `/help` mean the same everywhere. A line starting with `//` sends the rest with one
slash, for the rare message that has to start with one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.textmode import QUIT_WORDS

HELP = (
    ("/who", "list who is online"),
    ("/help", "show this list"),
    ("/quit or tata", "leave the room"),
    ("//text", "send a message that starts with '/'"),
)
KEYS_HELP = (
    ("Up / Down", "earlier lines you typed"),
    ("PageUp / PageDown", "scroll the messages"),
    ("Ctrl-U", "clear the line"),
    ("Ctrl-L", "jump to the newest message"),
    ("Ctrl-C", "leave"),
)


@dataclass(frozen=True)
class Send:
    """Post `text` to the room."""

    text: str


@dataclass(frozen=True)
class QuitCommand:
    """Leave the room."""


@dataclass(frozen=True)
class WhoCommand:
    """Ask who is online."""


@dataclass(frozen=True)
class HelpCommand:
    """Show the commands."""


@dataclass(frozen=True)
class Unknown:
    """A slash command this client does not know; `name` is what was typed."""

    name: str


Command = Send | QuitCommand | WhoCommand | HelpCommand | Unknown


def parse(line: str) -> Command | None:
    """The command in one typed line; None for a blank line, which does nothing."""
    word = line.strip()
    if not word:
        return None
    lowered = word.lower()
    if lowered in QUIT_WORDS:
        return QuitCommand()
    if lowered == "/who":
        return WhoCommand()
    if lowered in ("/help", "/?"):
        return HelpCommand()
    if word.startswith("//"):
        return Send(line.lstrip()[1:])
    if word.startswith("/") and len(word) > 1 and not word[1].isspace():
        return Unknown(word.split()[0])
    return Send(line)
