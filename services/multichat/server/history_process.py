"""The history's commits, in one process beside the server's, for all of its rooms.

Every echo waits for its message's commit. In a thread of the server's own process, a commit
shared the GIL with the event loop: each time the thread took it back from SQLite, the loop
stopped at its next system call until the thread let go (1,878 waits and 110 ms in one burst
round of half a second; docs/benchmarks.md). A child process has an interpreter of its own.
The server sends it each commit down a pipe, and it answers each one, in order, with a line.

`HistoryProcess` is the server's side: `await nursery.start(process.run)`, then
`commit_nowait(...)` for each commit. The child starts as the first room with history opens
(`start`; a server without history never starts one), and again after it ended, with the
next commit. `main` is the child's side: `python -m multichat.server.history_process`.

A request is a 4-byte little-endian length, then a pickle of `HistoryStore.append`'s arguments
and the file's path, made of tuples, strings, numbers and None: both ends are the same
interpreter (`sys.executable`). An answer is `ok` or `error <one line>`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import outcome
import trio

from ..protocol.events import BanEntry
from .history import BanChange, HistoryError, HistoryStore
from .history_entries import StoredEntry

log = logging.getLogger("multichat.history")

OnCommitted = Callable[[outcome.Outcome[None]], None]

_LENGTH = struct.Struct("<I")
_READY = b"ready"  # the child's first line, once it can commit
_OK = b"ok"
_ERROR = b"error "
# A child asked to stop finishes the commit it is in, then exits: a few milliseconds. One that
# still runs after this long is stuck (a disk that hangs), and is killed; SQLite's commit is
# atomic, so that costs at most the commit in progress, never the file.
STOP_SECONDS = 10.0


class HistoryProcess:
    """The child process that commits every room's history, and its two pipes.

    Commits run one at a time, in the order given, whichever room's; each one's `on_done`
    gets its outcome (None, or a HistoryError with one line for the host) in trio's thread,
    from `run`'s task, in that order. A child that ended (crashed, or killed) fails the
    commits it had been given, and the next commit starts another.
    """

    def __init__(self) -> None:
        self.pid: int | None = None  # the child's, while it runs
        self._given: deque[OnCommitted] = deque()  # not yet answered: oldest first
        self._unsent = bytearray()  # requests not yet written to the child
        self._stdin: int | None = None  # the pipe to the child, where it can be written now
        self._sending = False  # `_send` is writing
        self._wakeup = trio.Event()
        self._closing = False
        self._wanted = False  # start a child before the first commit
        self._ready = False  # the child runs and said it is ready
        self._attempt = _Attempt()  # the next child's start, as `start` waits for it

    async def start(self) -> None:
        """Start the child if none runs, and wait until it is ready for commits.

        A room with history opening calls this: its first echo then waits for no interpreter
        to start (0.2 s), and a child that cannot start is a one-line HistoryError at once.
        """
        if self._ready:
            return
        self._check_open()
        attempt = self._attempt
        self._wanted = True
        self._wakeup.set()
        await attempt.done.wait()
        if attempt.failure is not None:
            raise HistoryError(attempt.failure)

    def commit_nowait(
        self,
        path: str,
        entries: Sequence[StoredEntry],
        *,
        last_seq: int,
        bans: Sequence[BanChange],
        again: bool,
        on_done: OnCommitted,
    ) -> None:
        """Queue `HistoryStore.append(entries, last_seq=..., bans=..., again=...)` on the file
        at `path`.

        Raises trio.ClosedResourceError after `close_nowait`.
        """
        self._check_open()
        body = pickle.dumps(
            (path, [tuple(e) for e in entries], last_seq, [(_ban(b), a) for b, a in bans], again),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        request = _LENGTH.pack(len(body)) + body
        self._given.append(on_done)
        if self._stdin is not None and not (self._unsent or self._sending):
            # Written now, not by `_send` once this task yields: the writer asks for its next
            # commit just before it acknowledges the last one, and that fan-out holds the
            # loop for milliseconds, which the child would spend idle.
            # (Full, or the child is gone: then `_send` writes it, or `_receive` sees the end.)
            with contextlib.suppress(OSError):
                request = request[os.write(self._stdin, request) :]
        if request:
            self._unsent += request
            self._wakeup.set()

    def _check_open(self) -> None:
        if self._closing:
            raise trio.ClosedResourceError("the history's process is stopping")

    def close_nowait(self) -> None:
        """Take no more commits; `run` returns once those given are done and the child ended."""
        self._closing = True
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start a child whenever there are commits for it, until `close_nowait`."""
        task_status.started()
        try:
            while True:
                while not (self._given or (self._wanted and not self._closing)):
                    if self._closing:
                        return
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                # Once: a child that dies as it starts is started again for a commit only
                # (the writer retries every few seconds), never in a loop.
                self._wanted = False
                try:
                    child = await trio.lowlevel.open_process(
                        [sys.executable, "-m", __name__],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                except OSError as exc:
                    self._give_up(f"cannot start the history's process: {exc}")
                    continue
                await self._serve(child)
        finally:
            # Cancelled: whatever is left would wait for an answer forever.
            self._closing = True
            self._give_up("the history's process was stopped")

    async def _serve(self, child: trio.Process) -> None:
        assert child.stdin is not None and child.stdout is not None
        self.pid = child.pid
        # Only a pipe with a file descriptor (not Windows') can be written without a task.
        fileno = getattr(child.stdin, "fileno", None)
        self._stdin = fileno() if fileno is not None else None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send, child.stdin)
                await self._receive(child.stdout)
                nursery.cancel_scope.cancel()
        finally:
            self.pid = self._stdin = None
            started, self._ready = self._ready, False
            with trio.CancelScope(shield=True):
                await child.stdin.aclose()
                with trio.move_on_after(STOP_SECONDS):
                    await child.wait()
                if child.returncode is None:
                    log.error("the history's process did not stop; it was killed")
                    child.kill()
                    await child.wait()
        if not started:
            self._end_attempt(
                f"the history's process ended as it started (exit status {child.returncode}); "
                "its error is above"
            )
        if self._given:
            self._fail(f"the history's process ended (exit status {child.returncode})")

    async def _send(self, stdin: trio.abc.SendStream) -> None:
        while True:
            while not self._unsent:
                if self._closing:
                    await stdin.aclose()  # the child's end of file: it stops
                    return
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            data = bytes(self._unsent)
            self._unsent.clear()
            self._sending = True
            try:
                await stdin.send_all(data)
            except trio.BrokenResourceError:
                return  # the child is gone: `_receive` sees its end
            finally:
                self._sending = False

    async def _receive(self, stdout: trio.abc.ReceiveStream) -> None:
        buffer = bytearray()
        while data := await stdout.receive_some():
            buffer += data
            while (end := buffer.find(b"\n")) >= 0:
                answer = bytes(buffer[:end])
                del buffer[: end + 1]
                if not self._ready:
                    if answer != _READY:
                        return  # not our child
                    # (a second room's `start` during this one's asked again: done too)
                    self._ready, self._wanted = True, False
                    self._end_attempt(None)
                    continue
                if not self._given:
                    return  # an answer to nothing: not our child any more
                on_done = self._given.popleft()
                if answer == _OK:
                    on_done(outcome.Value(None))
                else:
                    message = answer.removeprefix(_ERROR).decode(errors="replace")
                    on_done(outcome.Error(HistoryError(message)))

    def _end_attempt(self, failure: str | None) -> None:
        """The child being started is ready (None), or will never be (why)."""
        attempt, self._attempt = self._attempt, _Attempt()
        attempt.failure = failure
        attempt.done.set()

    def _give_up(self, why: str) -> None:
        """No child: the one being started never will be, and the commits given fail."""
        self._end_attempt(why)
        self._fail(why)

    def _fail(self, why: str) -> None:
        """Fail every commit given and not answered: the child that had them is gone."""
        given, self._given = self._given, deque()
        self._unsent.clear()
        for on_done in given:
            on_done(outcome.Error(HistoryError(why)))


class _Attempt:
    """One child's start: `done` once it is ready, or `failure` says why it never will be."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.failure: str | None = None


def _ban(ban: BanEntry | None) -> tuple[object, ...] | None:
    return None if ban is None else (ban.address, ban.name, ban.until, ban.reason, ban.by)


def _read_request(requests: BinaryIO) -> bytes | None:
    head = requests.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    return requests.read(length)


def main() -> None:
    """The child: commit each request from stdin, answer each on stdout, until end of file."""
    # Ctrl-C reaches every process of the terminal; the server decides when this one stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The answers get a pipe of their own: a stray print on stdout would be read as one.
    # Unbuffered: nothing left to flush, and fail on, once the server is gone.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stores: dict[str, HistoryStore] = {}
    answer = _READY
    try:
        while True:
            try:
                answers.write(answer + b"\n")
            except OSError:  # the server is gone (killed): nobody is waiting for answers
                return
            request = _read_request(sys.stdin.buffer)
            if request is None:
                return
            path, entries, last_seq, bans, again = pickle.loads(request)
            try:
                store = stores.get(path)
                if store is None:
                    store = stores[path] = HistoryStore.open(Path(path))
                store.append(
                    [StoredEntry(*entry) for entry in entries],
                    last_seq=last_seq,
                    bans=[(None if b is None else BanEntry(*b), a) for b, a in bans],
                    again=again,
                )
                answer = _OK
            except HistoryError as exc:
                answer = _ERROR + " ".join(str(exc).split()).encode()
    finally:
        for store in stores.values():
            store.close()


if __name__ == "__main__":
    main()
