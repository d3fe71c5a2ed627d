"""A member's typed lines, from the keyboard until the room acknowledges or refuses them.

The delivery guarantee lives here: a line stays until its echo (the acknowledgement) comes
back, whatever happens to the connection in between. `ChatClient` owns the connection and asks
the outbox what to send; the outbox knows where each line stands:

- *queued*: typed, not yet sent on this connection (oldest first);
- *unacknowledged*: sent on this connection, its echo not seen yet;
- *deferred*: refused because the session was ending; queued again after a rejoin;
- *retrying*: refused while the room's backplane was away; queued again at `retry_at`.

A lost connection puts every line not acknowledged back at the front of the queue, in the order
typed. The ones that were sent are remembered as *maybe delivered*: after a rejoin, the room's
replay may show one of them under our name, which is then its echo, and it is not sent twice.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import trio

from ..protocol.events import Error
from ..protocol.sanitize import clean_text

# Server refusals of a line that sending it again cannot fix. A muted member's lines count as
# refused: resending them after every rejoin would knock on a closed door forever.
LINE_REFUSALS = frozenset({"too_long", "empty", "muted"})
# A private line to someone who is not there; requests (`/kick bob`) get the same code, so the
# error is matched to a line by the name it quotes.
NO_SUCH_MEMBER = "no_such_member"
# Refusals of a line because the session is ending; it may go again after a rejoin.
LINE_DEFERRALS = frozenset({"shutting_down", "not_joined"})
# Refusals of a line while the room's backplane (Redis) is away: sent again on this connection.
LINE_RETRIES = frozenset({"unavailable"})
# How long a line refused as `unavailable` waits before it goes again: a Redis restart takes
# seconds, and trying sooner only collects more refusals (a reconnect waits as long at first).
RETRY_UNAVAILABLE_SECONDS = 2.0


Fate = Literal["dropped", "retried", "deferred"]


@dataclass
class Line:
    """A typed line on its way to the room (or to `to` alone); `id` comes back on its echo."""

    id: str
    text: str
    to: str | None = None
    action: bool = False


class Outbox:
    """Every line typed and not yet acknowledged or given up on. Never blocks but for
    `wait_acknowledged`."""

    def __init__(self) -> None:
        self._queued: deque[Line] = deque()
        self._unacked: dict[str, Line] = {}
        self._deferred: list[Line] = []
        self._retrying: list[Line] = []
        self.retry_at = math.inf  # when the retrying lines go back to the queue
        self._maybe_delivered: set[str] = set()  # ids sent on a connection that broke
        self._next_id = 0
        # Ids are ours alone in the room: the server hands a sender's id back on its echo.
        self._id_prefix = secrets.token_hex(3)
        self._acknowledged = trio.Event()
        self._acknowledged.set()

    def __len__(self) -> int:
        """Lines typed and not yet acknowledged."""
        return len(self._queued) + len(self._unacked) + len(self._deferred) + len(self._retrying)

    def __iter__(self) -> Iterator[Line]:
        """The queued lines, oldest first."""
        return iter(self._queued)

    @property
    def awaiting_echo(self) -> bool:
        """Whether a line sent on this connection is still waiting for its echo."""
        return bool(self._unacked)

    def add_nowait(self, text: str, *, to: str | None = None, action: bool = False) -> Line:
        """Queue a typed line, with a fresh id."""
        self._next_id += 1
        line = Line(f"{self._id_prefix}-{self._next_id}", text, to, action)
        self._queued.append(line)
        if self._acknowledged.is_set():
            self._acknowledged = trio.Event()
        return line

    def take_nowait(self) -> list[Line]:
        """Every queued line, oldest first, from now on waiting for its echo."""
        taken = list(self._queued)
        self._queued.clear()
        for line in taken:
            self._unacked[line.id] = line
        return taken

    def acknowledge_nowait(self, id: str) -> None:
        """The room echoed the line `id` (if it is ours still): it is delivered."""
        self._unacked.pop(id, None)
        # Refused as "may have gone through", and it did: not to be sent again.
        self._retrying = [line for line in self._retrying if line.id != id]
        self._maybe_delivered.discard(id)
        self._check_acknowledged()

    def refuse_nowait(self, error: Error, now: float) -> tuple[Line, Fate] | None:
        """The line `error` refuses and what became of it: given up on (`dropped`: sending it
        again cannot help, or the refusal is one this client does not know, from a newer
        server, whose message then says why), `retried` at `retry_at`, or `deferred` to the
        next connection. None if `error` is no line's (a refused request, a notice of the
        session's end)."""
        line = self._refused_line(error)
        if line is None:
            return None
        fate: Fate
        if error.code in LINE_RETRIES:
            self._retrying.append(line)
            self.retry_at = min(self.retry_at, now + RETRY_UNAVAILABLE_SECONDS)
            fate = "retried"
        elif error.code in LINE_DEFERRALS:
            self._deferred.append(line)
            fate = "deferred"
        else:
            # Sending it again would meet the same answer; the member is shown it instead,
            # and may type the line again (as the page does, outbox.js).
            self._maybe_delivered.discard(line.id)
            fate = "dropped"
        self._check_acknowledged()
        return line, fate

    def retry_due_nowait(self, now: float) -> None:
        """If `retry_at` has come, the retrying lines go to the front of the queue."""
        if now >= self.retry_at:
            self._queued.extendleft(reversed(self._retrying))
            self._retrying.clear()
            self.retry_at = math.inf

    def requeue_nowait(self) -> None:
        """The connection is gone: lines not acknowledged go back to the front of the queue,
        in the order typed."""
        back = [*self._retrying, *self._deferred, *self._unacked.values()]
        self._maybe_delivered.update(line.id for line in self._unacked.values())
        self._queued.extendleft(reversed(back))
        self._retrying.clear()
        self.retry_at = math.inf
        self._deferred.clear()
        self._unacked.clear()

    def claim_replayed_nowait(self, text: str) -> Line | None:
        """The queued line that a replayed message of ours with `text` is, taken off the queue;
        None if none is (only a line sent on a connection that broke can have been)."""
        for line in self._queued:
            if line.id in self._maybe_delivered and clean_text(line.text) == text:
                self._queued.remove(line)
                self._maybe_delivered.discard(line.id)
                self._check_acknowledged()
                return line
        return None

    def settle_nowait(self) -> None:
        """Wake `wait_acknowledged`: nothing more will be acknowledged (the client stopped)."""
        self._acknowledged.set()

    async def wait_acknowledged(self) -> None:
        """Wait until every line queued so far has been acknowledged or refused."""
        while not self._acknowledged.is_set():
            await self._acknowledged.wait()

    def _check_acknowledged(self) -> None:
        if not self:
            self._acknowledged.set()

    def _refused_line(self, error: Error) -> Line | None:
        if error.id is not None:
            # The server names the line: with a backplane, a refusal comes at once and the
            # echoes of earlier lines later, so "the oldest" would be the wrong one.
            return self._unacked.pop(error.id, None) if isinstance(error.id, str) else None
        if not self._unacked:
            return None
        if error.code in LINE_REFUSALS or error.code in LINE_DEFERRALS:
            # The room answers in order: the oldest line not yet echoed is the one.
            return self._unacked.pop(next(iter(self._unacked)))
        if error.code == NO_SUCH_MEMBER:
            for line in self._unacked.values():
                if line.to is not None and repr(line.to) in error.message:
                    return self._unacked.pop(line.id)
        return None
