"""The room's log meets its history: every entry is stored before anyone may read it.

The room hands each new log entry to `Archive.persist`; the history writer stores it and calls
back, and only then does the room let members read it (`Room.stored_nowait`). An echo is the
acknowledgement of a message, so this is what makes "nothing acknowledged is ever lost" true.
Entries history does not keep (the shutdown notice) ride along: they become readable with the
stored entries before them, so the log is still read in its own order.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import get_args

from ..protocol.events import Message, Notice
from .entries import Entry
from .history_entries import HistoryEvent, StoredEntry
from .history_writer import HistoryWriter
from .room import Room

log = logging.getLogger("multichat.history")

# HistoryEvent's members as a tuple: isinstance takes a tuple faster than a union.
_KEPT = get_args(HistoryEvent)


class Archive:
    """Connects `room`'s log to `writer`; make the writer with `on_flushed=archive.flushed`."""

    def __init__(self, room: Room, writer: HistoryWriter) -> None:
        self.room = room
        self.writer = writer
        # The log index of every entry handed to the writer and not yet done, oldest first:
        # the writer does them in order, and says how many once per transaction, which is
        # cheaper than a callback for each (this runs for every message).
        self._waiting: deque[int] = deque()
        self._riding = -1  # the newest log index waiting for those to be done

    def persist(self, entry: Entry, index: int) -> None:
        """The room's `persist`: store `entry` (log index `index`), then make it readable."""
        event = entry.event
        if type(event) is Message:  # nearly every entry: no clock to read, no match to run
            stored = StoredEntry.of_message(event, entry.seq)
        elif isinstance(event, _KEPT):
            stored = StoredEntry.from_event(event, seq=entry.seq, ts=self.room.now())
        else:
            # Not history (the shutdown notice): readable as soon as what came before it is.
            if self._waiting:
                self._riding = index
            else:
                self.room.stored_nowait(index)
            return
        self._waiting.append(index)
        self.writer.append_nowait(stored)

    def flushed(self, count: int) -> None:
        """The writer's `on_flushed`: its next `count` entries are done; make them readable."""
        if not count:
            return
        waiting = self._waiting
        for _ in range(count - 1):
            waiting.popleft()
        index = waiting.popleft()
        if not waiting and self._riding > index:
            index, self._riding = self._riding, -1
        self.room.stored_nowait(index)

    def failing(self, reason: str | None) -> None:
        """The writer's `on_failing`: tell the members, and the host's log, once each way."""
        if reason is None:
            log.warning("history is being saved again")
            text = "History is being saved again."
        else:
            log.error("history is not being saved: %s", reason)
            text = "History is not being saved for now (the host's disk is refusing writes)."
        self.room.broadcast(Notice(text, self.room.now()))
