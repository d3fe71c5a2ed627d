"""A member as the room sees it, and the `Outlet` through which the room drives its connection.

A member is a cursor into the room's log (log.py), the frames queued for it alone, and what the
room knows of it: its name, whether it is away or an operator, where it came from. The room
never touches a socket: it asks a member's outlet to flush, to close, or to drop the connection.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from .entries import Dialect

if TYPE_CHECKING:
    from .transport import SendBatch


class Outlet(Protocol):
    """A member's connection, as the room drives it. One object rather than three callbacks:
    5,000 members would hold 15,000 bound methods."""

    def flush_nowait(self, batch: SendBatch | None = None, /) -> None:
        """Send what is waiting for the member: at once, or, with the fan-out's `batch`, into
        the batch, which the fan-out sends for everyone together."""

    def kick(self, reason: str, /) -> None:
        """Drop the connection now, sending nothing more (too slow to read)."""

    def finish_nowait(self) -> None:
        """Close the connection once what is queued for it is sent (kicked, banned)."""


class Member:
    """A joined connection as the room sees it."""

    __slots__ = (
        "away",
        "cursor",
        "dialect",
        "end",
        "key",
        "left",
        "name",
        "op",
        "outlet",
        "owned",
        "private",
        "queued",
        "renamed_at",
        "sending",
        "source",
    )

    def __init__(
        self,
        name: str,
        key: str,
        *,
        dialect: Dialect,
        outlet: Outlet,
        source: str = "",
    ) -> None:
        self.name = name
        self.key = key
        self.dialect = dialect
        self.outlet = outlet
        self.source = source  # the address it came from (behind the tunnel too)
        self.op = False  # an operator of the room
        self.away: str | None = None  # why it is away, or None
        # Out of the room: the log index past which nothing is for it any more.
        self.left: int | None = None
        self.renamed_at = -math.inf  # monotonic time of its last /nick
        self.cursor = 0  # index of the next log entry this member has not taken
        self.end = 0  # log bytes up to the cursor
        self.owned = -1  # index of the newest log entry that differs for this member
        # Frames for this member alone, each to go out just before the log entry it names.
        self.private: list[tuple[int, bytes]] = []
        self.queued = 0  # bytes in `private`, which count toward the outbox limit too
        self.sending: float | None = None  # since when its socket has refused more
