"""The room's log entries: one event, encoded once, and its renderings for each kind of member.

Most members get the same bytes as everyone else (shared by the fan-out); an entry differs only
for its owner (a sender's echo carries its id; a joiner's own join notice is empty) and, for a
private message, for its recipient: everyone else gets nothing of it.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from ..protocol import textmode, websocket, wire
from ..protocol.events import Event, Message, MessageId

if TYPE_CHECKING:
    from .member import Member


class Dialect(enum.IntEnum):
    """How a member's connection carries the room's frames.

    An int: the fan-out keys its shared renderings by (cursor, dialect) once per member per
    flush, and a plain Enum's hash is a Python call (0.27 us more a lookup, measured).
    """

    JSON = 0  # multichat/1 JSON lines over TCP
    TEXT = 1  # plain-text lines (nc, telnet)
    WEBSOCKET = 2  # one JSON frame per WebSocket text message


# Module names for the members, read on the hot path without the enum class's lookup.
JSON, TEXT, WEBSOCKET = Dialect.JSON, Dialect.TEXT, Dialect.WEBSOCKET


class Entry:
    """One frame in the log, encoded once for JSON members and, on demand, for the others."""

    __slots__ = (
        "end",
        "event",
        "json",
        "owner",
        "owner_json",
        "owner_text",
        "recipient",
        "recipient_json",
        "seq",
        "text",
        "ws",
    )

    def __init__(self, event: Event, json: bytes, end: int, seq: int = 0) -> None:
        self.event = event
        self.json = json
        self.text: bytes | None = None
        self.ws: bytes | None = None  # the WebSocket frame, the same bytes for every member
        self.end = end  # bytes in the log up to and including this entry
        self.seq = seq  # the room's newest message seq when appended (a message's own)
        # The member this entry is different for (its own echo or join), and what it gets.
        self.owner: Member | None = None
        self.owner_json = b""
        self.owner_text: bytes | None = b""  # None: the same as `text`
        # A private message's recipient, and the frame it alone gets.
        self.recipient: Member | None = None
        self.recipient_json = b""

    @classmethod
    def private(
        cls,
        message: Message,
        end: int,
        sender: Member | None,
        recipient: Member | None,
        id: MessageId | None,
    ) -> Entry:
        """A private message: its two parties see it, everyone else nothing at all (with a
        backplane, a party on another server is None here)."""
        entry = cls(message, b"", end, message.seq)
        entry.text = entry.ws = b""
        full = wire.encode(message)
        entry.owner = sender
        entry.owner_json = full if id is None else wire.add_id(full, id)
        entry.owner_text = textmode.render(message)
        entry.recipient = recipient
        entry.recipient_json = full
        return entry

    def render_text(self) -> bytes:
        if self.text is None:
            self.text = textmode.render(self.event)
        return self.text

    def render(self, dialect: Dialect) -> bytes:
        """This entry as every member but its owner gets it."""
        if dialect is JSON:
            return self.json
        if dialect is TEXT:
            return self.render_text()
        if self.ws is None:
            self.ws = websocket.frame(self.json)
        return self.ws

    def render_for(self, member: Member, dialect: Dialect) -> bytes:
        """This entry as `member` gets it."""
        if self.owner is member:
            return self.render_for_owner(dialect)
        if self.recipient is member:
            if dialect is JSON:
                return self.recipient_json
            if dialect is TEXT:
                return textmode.render(self.event)
            return websocket.frame(self.recipient_json)
        return self.render(dialect)

    def render_for_owner(self, dialect: Dialect) -> bytes:
        """This entry as its owner gets it (its echo, with the id; nothing for its own join)."""
        if dialect is JSON:
            return self.owner_json
        if dialect is TEXT:
            return self.render_text() if self.owner_text is None else self.owner_text
        return websocket.frame(self.owner_json) if self.owner_json else b""
