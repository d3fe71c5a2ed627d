"""A member's connection for tests that drive a `Room` without sockets: it records what the
room asks of it (`multichat.server.member.Outlet`)."""

from __future__ import annotations

from collections.abc import Callable

from multichat.server.transport import SendBatch


class RecordingOutlet:
    """Counts flushes (running `on_flush` for each), and keeps why it was kicked."""

    def __init__(self, on_flush: Callable[[], object] = lambda: None) -> None:
        self._on_flush = on_flush
        self.flushes = 0
        self.kicked: list[str] = []
        self.finished = False

    def flush_nowait(self, batch: SendBatch | None = None, /) -> None:
        self.flushes += 1
        self._on_flush()

    def kick(self, reason: str, /) -> None:
        self.kicked.append(reason)

    def finish_nowait(self) -> None:
        self.finished = True
