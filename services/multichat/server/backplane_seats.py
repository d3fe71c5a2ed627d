"""This server's members on the backplane, and every change it makes to a room through them.

A seat is a member's place in a room on every server: `join` claims its name across the
backplane, `rename` claims another, `leave_nowait` gives it up, and `publish` appends to the
room as it. Each is an `Op` of the writer (backplane_writer.py), applied in the order asked, and
the seat table here follows what Redis answered: a seat the APPLY script no longer finds (its
server was taken for dead meanwhile) is dropped, and the caller told `NotJoined`.

    seats = Seats(writer, node="n1")
    seat = await seats.join(room, "alice")               # NameTaken: on some server
    seq = await seats.publish(room, entry, seat=seat, id="42")
    seats.leave_nowait(seat, "quit")
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable

import trio

from ..protocol.events import MessageId
from ..protocol.names import name_key
from .backplane_codec import (
    PRESENCE_TYPES,
    Origin,
    Seat,
    encode_fields,
    encode_topic,
    moderation_change,
)
from .backplane_errors import BackplaneUnavailable, NameTaken, NotJoined
from .backplane_writer import DONE, Op, Writer
from .history_entries import JOIN, LEAVE, MESSAGE, MODERATE, NICK, TOPIC, StoredEntry

# What the others see when a member whose join was never confirmed to it is taken out again.
ABANDONED_REASON = "disconnected"


class Seats:
    """The seats of this server's members (by token, as Redis has them), and the changes made
    through them, each an op of `writer` from node `node`."""

    def __init__(self, writer: Writer, *, node: str) -> None:
        self._writer = writer
        self.node = node
        self._held: dict[str, Seat] = {}
        self._refs = 0  # publishes so far: each one's number (BackplaneUnavailable.ref)

    def __len__(self) -> int:
        return len(self._held)

    def held(self) -> list[Seat]:
        """This server's members, as the backplane has them."""
        return list(self._held.values())

    def tokens(self) -> set[str]:
        """The tokens of the seats held, and of those with an op waiting (a leave, while Redis
        is away)."""
        return set(self._held) | self._writer.queued_tokens()

    def drop(self, seats: Iterable[Seat]) -> list[Seat]:
        """Forget `seats` (the backplane no longer has them): those that were held."""
        return [seat for seat in seats if self._held.pop(seat.token, None) is not None]

    async def publish(
        self,
        room: str,
        entry: StoredEntry,
        *,
        seat: Seat | None = None,
        id: MessageId | None = None,
    ) -> int:
        """Append `entry` (a message, topic, notice, away or back; its seq is ignored) to
        `room`, from `seat` if a member's, with its client's message `id`. Returns the seq
        Redis gave it (a message's own; anything else's, the newest message's).

        Raises BackplaneUnavailable, or NotJoined if the seat is no longer in the room.
        """
        status, seq, _ = await self._writer.apply(self._post(room, entry, seat, id, None))
        if status not in DONE:
            raise NotJoined("you are no longer in the room")
        return seq

    def publish_nowait(
        self,
        room: str,
        entry: StoredEntry,
        *,
        seat: Seat | None = None,
        id: MessageId | None = None,
        on_done: Callable[[BackplaneUnavailable | NotJoined | None], None],
    ) -> None:
        """`publish` without waiting: `on_done` gets None once Redis has the entry, or what
        `publish` would have raised. Posts are applied in the order they were made, so a
        member's lines can go one after another without waiting for each round trip, and a
        server's notices keep the order they were made in.

        Raises BackplaneUnavailable or NotJoined at once, without calling `on_done`, when it
        knows already."""
        self._writer.submit_nowait(self._post(room, entry, seat, id, on_done))

    def _post(
        self,
        room: str,
        entry: StoredEntry,
        seat: Seat | None,
        id: MessageId | None,
        on_done: Callable[[BackplaneUnavailable | NotJoined | None], None] | None,
    ) -> Op:
        if entry.type in PRESENCE_TYPES:
            raise ValueError(f"{entry.type} entries are made by join, leave and rename")
        token = key = ""
        if seat is not None:
            current = self._held.get(seat.token)
            if current is None:
                raise NotJoined(f"{seat.name} is not in the room")
            token, key = current.token, current.key

        def landed(op: Op) -> None:
            gone = op.outcome is not None and op.outcome[0] not in DONE
            if gone:
                self._held.pop(token, None)  # the script found no such seat
            if on_done is not None:
                if op.error is not None:
                    on_done(op.error)
                else:
                    on_done(NotJoined("you are no longer in the room") if gone else None)

        self._refs += 1
        return Op(
            "P",
            room,
            key=key,
            token=token,
            arg1=entry.type,
            arg2=(
                encode_topic(entry.text, entry.sender)
                if entry.type == TOPIC
                else moderation_change(entry)
                if entry.type == MODERATE
                else ""
            ),
            fields=encode_fields(entry, Origin(self.node, token, id, self._refs)),
            ref=self._refs,
            dedupe=_client_id(id) if token and entry.type == MESSAGE else "",
            on_done=landed,
        )

    async def join(self, room: str, name: str, *, ts: float | None = None) -> Seat:
        """Claim `name` on every server and announce the join in `room`; the member's seat.
        Raises NameTaken or BackplaneUnavailable."""
        key = name_key(name)
        # 64 random bits: a token only has to differ from every other member's.
        seat = Seat(room, key, name, secrets.token_hex(8))
        entry = StoredEntry(0, time.time() if ts is None else ts, JOIN, name)

        def landed(op: Op) -> None:
            if op.outcome is not None and op.outcome[0] == "ok":
                self._held[seat.token] = seat
                if op.abandoned:
                    self.leave_nowait(seat, ABANDONED_REASON)

        op = Op(
            "J",
            room,
            key=key,
            token=seat.token,
            arg1=name,
            fields=encode_fields(entry, Origin(self.node, seat.token)),
            on_done=landed,
        )
        try:
            status, _, _ = await self._writer.apply(op)
        except trio.Cancelled:
            if op.outcome is not None and op.outcome[0] == "ok":
                self.leave_nowait(seat, ABANDONED_REASON)
            raise
        if status == "taken":
            raise NameTaken(f"the name {name!r} is taken")
        return seat

    async def rename(self, seat: Seat, name: str, *, ts: float | None = None) -> Seat:
        """Call `seat`'s member `name` on every server from now on, announced in its room; the
        renamed seat. Raises NameTaken, NotJoined or BackplaneUnavailable."""
        current = self._held.get(seat.token)
        if current is None:
            raise NotJoined(f"{seat.name} is not in the room")
        key = name_key(name)
        renamed = Seat(current.room, key, name, current.token)
        entry = StoredEntry(0, time.time() if ts is None else ts, NICK, current.name, name)

        def landed(op: Op) -> None:
            if op.outcome is not None and op.outcome[0] == "ok" and renamed.token in self._held:
                self._held[renamed.token] = renamed

        op = Op(
            "R",
            current.room,
            key=current.key,
            token=current.token,
            arg1=key,
            arg2=name,
            fields=encode_fields(entry, Origin(self.node, current.token)),
            on_done=landed,
        )
        status, _, _ = await self._writer.apply(op)
        if status == "taken":
            raise NameTaken(f"the name {name!r} is taken")
        if status != "ok":
            self._held.pop(current.token, None)
            raise NotJoined(f"{current.name} is not in the room")
        return renamed

    def leave_nowait(self, seat: Seat, reason: str, *, ts: float | None = None) -> None:
        """`seat`'s member leaves, saying `reason`: its name is free on every server once Redis
        has it, which may be later (while Redis is away). Never blocks; leaving twice is
        harmless."""
        current = self._held.pop(seat.token, None)
        if current is None:
            return
        entry = StoredEntry(0, time.time() if ts is None else ts, LEAVE, current.name, reason)
        fields = encode_fields(entry, Origin(self.node, current.token))
        op = Op("L", current.room, key=current.key, token=current.token, fields=fields, retry=True)
        self._writer.submit_nowait(op)


def _client_id(id: MessageId | None) -> str:
    """A client's message id as a string that keeps its type, so 42 and "42" differ ("" for
    none). Not JSON: this runs for every post, and nothing reads it back."""
    if id is None:
        return ""
    return f"n{id}" if type(id) is int else f"s{id}"
