"""The room's log meets its history: every entry is stored before anyone may read it.

The room hands each new log entry to `Archive.persist`; the history writer stores it and calls
back, and only then does the room let members read it (`Room.stored_nowait`). An echo is the
acknowledgement of a message, so this is what makes "nothing acknowledged is ever lost" true.
Entries history does not keep (the shutdown notice) ride along: they become readable with the
stored entries before them, so the log is still read in its own order.
"""

from __future__ import annotations

import logging
from functools import partial

from ..protocol.events import Notice
from .entries import Entry
from .history_entries import HistoryEvent, StoredEntry
from .history_writer import HistoryWriter
from .room import Room

log = logging.getLogger("multichat.history")


class Archive:
    """Connects `room`'s log to `writer`."""

    def __init__(self, room: Room, writer: HistoryWriter) -> None:
        self.room = room
        self.writer = writer
        self._outstanding = 0  # entries handed to the writer and not yet done
        self._riding = -1  # the newest log index waiting for those to be done
        # The newest index stored, made readable once per transaction, not once per entry:
        # the writer reports a transaction's entries one after the other, then `flushed`.
        self._stored_up_to = -1
        self._published = -1

    def persist(self, entry: Entry, index: int) -> None:
        """The room's `persist`: store `entry` (log index `index`), then make it readable."""
        event = entry.event
        if not isinstance(event, HistoryEvent):
            # Not history (the shutdown notice): readable as soon as what came before it is.
            if self._outstanding:
                self._riding = index
            else:
                self.room.stored_nowait(index)
            return
        stored = StoredEntry.from_event(event, seq=entry.seq, ts=self.room.now())
        self._outstanding += 1
        self.writer.append_nowait(stored, partial(self._stored, index))

    def _stored(self, index: int, saved: bool) -> None:
        self._outstanding -= 1
        if not self._outstanding and self._riding > index:
            index, self._riding = self._riding, -1
        self._stored_up_to = index

    def flushed(self) -> None:
        """The writer's `on_flushed`: make a commit's entries readable, once per commit."""
        if self._stored_up_to > self._published:
            self._published = self._stored_up_to
            self.room.stored_nowait(self._stored_up_to)

    def failing(self, reason: str | None) -> None:
        """The writer's `on_failing`: tell the members, and the host's log, once each way."""
        if reason is None:
            log.warning("history is being saved again")
            text = "History is being saved again."
        else:
            log.error("history is not being saved: %s", reason)
            text = "History is not being saved for now (the host's disk is refusing writes)."
        self.room.broadcast(Notice(text, self.room.now()))
