"""What the client tells its interface besides the room's events, and how a session ended.

`ChatClient` (connection.py) hands its `listener` the room's events as they arrive and, in the
same stream and order, these updates of its own; `run` returns an `Ending`. The terminal
interface (tui.py) and pipe mode (pipe.py) show them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..protocol.events import Error, Event, Welcome
from .outbox import Line


@dataclass(frozen=True)
class Joined:
    """Logged in (again, after a lost connection, when `rejoined`; then `missed` messages
    were said meanwhile, and the room's events that follow begin with them); or, `moved`,
    now in another room of the server (`/join`), whose recent history follows."""

    welcome: Welcome
    rejoined: bool = False
    missed: int = 0
    moved: bool = False


@dataclass(frozen=True)
class Lost:
    """The connection broke; try `attempt` of `tries` to rejoin starts after `delay` seconds."""

    reason: str
    attempt: int
    tries: int
    delay: float


@dataclass(frozen=True)
class NotSent:
    """The room refused `line` (too long, say) and it will not be sent again."""

    line: Line
    error: Error


@dataclass(frozen=True)
class Ending:
    """Why `run` returned, and the lines typed but never acknowledged, oldest first."""

    why: Literal["quit", "shutdown", "lost", "kicked"]
    reason: str
    unsent: tuple[str, ...] = ()


Update = Joined | Lost | NotSent
Listener = Callable[[Event | Update], None]
