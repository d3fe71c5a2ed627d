"""The task that feeds the room's history: the room queues, the writer commits, off the loop.

The room never waits, and a disk does: the room queues each entry with `append_nowait`, and
the writer commits everything queued since its last commit in one transaction, in the
server's history process (history_process.py), then calls each entry's `on_done` back in
trio's thread, in order. The room lets an entry be read from that callback, which is what
makes an echo an acknowledgement.
While the disk refuses (full, or gone), entries are still acknowledged, unsaved, and retried;
docs/history.md says what that and a power cut cost.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from functools import partial

import outcome
import trio

from ..protocol.events import BanEntry
from .history import HistoryError, HistoryStore, OnDone
from .history_entries import MESSAGE, StoredEntry
from .history_process import HistoryProcess
from .history_settings import HistorySettings

log = logging.getLogger("multichat.history")

# With NORMAL the WAL reaches the disk at a checkpoint. The writer runs one this long after a
# commit, so a power cut costs about the last second of history; SQLite's own checkpoints are
# off (history.py), and ext4 itself commits every 5 s.
SYNC_SECONDS = 1.0
# How often retention is applied: an hour of extra history is harmless, and a prune scans.
PRUNE_EVERY_SECONDS = 3600.0
# While the disk refuses writes, retrying on every message would spin on the error; once in
# this long notices freed space soon enough.
RETRY_SECONDS = 5.0
# Entries held in memory for the retry while the disk refuses them (a few MB of chat); older
# ones are given up on, and the host's log says how many.
MAX_UNSAVED = 10_000
# Entries in one commit at most. Entries become readable a commit at a time, and the fan-out
# gives everyone a commit's worth in one pass without yielding: 1,800 entries to 50 members
# held the loop for up to 90 ms in a burst, and the next commit's hand-off waited behind it.
# 256 rows are 3 ms of SQLite on the test VM, so the disk keeps up with any burst.
MAX_BATCH = 256


class HistoryWriter:
    """Feeds a `HistoryStore` from trio without ever making the room wait.

    Run it with `await nursery.start(writer.run)` while `process` runs (in a nursery that
    outlives the writer's: its last commit goes through `process`). Then
    `append_nowait(entry, on_done)` queues an entry, and `on_done(saved)` is called in trio's
    thread once the entry's transaction committed (`saved` True), or once saving failed
    (`saved` False; see `failing`). Callbacks run in the order the entries were appended, and
    `on_flushed(how many)` after each group.
    `set_ban_nowait` queues a ban the same way (its signature is `Moderation.on_ban`'s).

    Commits are grouped the way a kernel corks a socket: with none running, what is queued goes
    to the disk at once; while one runs, everything queued meanwhile waits and then goes in
    the next one. A quiet room pays one commit's latency, and a busy one commits in batches.

    While the disk refuses writes, `failing` is the reason (and `on_failing(reason)` was
    called); entries keep being acknowledged at once with `saved` False, are kept in memory
    (up to MAX_UNSAVED), and are saved by the first retry that succeeds, when `on_failing(None)`
    is called.
    """

    def __init__(
        self,
        store: HistoryStore,
        process: HistoryProcess,
        *,
        on_failing: Callable[[str | None], None] | None = None,
        on_flushed: Callable[[int], None] | None = None,
    ) -> None:
        if store.path is None:
            raise ValueError("a history kept in memory has no file for the process to write")
        self.store = store
        self._path = str(store.path.absolute())
        self._process = process
        self.failing: str | None = None
        self.given_up = 0  # entries dropped from memory before the disk took them
        self._on_failing = on_failing or (lambda reason: None)
        self._on_flushed = on_flushed or (lambda count: None)
        self._queue: list[tuple[StoredEntry, OnDone | None]] = []
        self._bans: dict[str, BanEntry | None] = {}  # by address, in the order set
        self._ban_changes = 0  # queued in `_bans`, counting each one a later one replaced
        self._unsaved: deque[StoredEntry] = deque()
        self._unsaved_bans: dict[str, BanEntry | None] = {}
        self._last_seq = store.last_seq()
        self._retry_at = -math.inf
        self._token: trio.lowlevel.TrioToken | None = None  # set while `run` runs
        self._closed = False  # no more entries taken
        self._final = False  # the last commit: made even while the disk is failing
        self._in_flight = False  # a commit is in the process's hands
        self._submit_soon = False  # a `_submit` is scheduled
        self._crashed: BaseException | None = None  # raised by `run`
        self._wakeup = trio.Event()  # `run` has something to look at
        self._asked = 0  # entries and ban changes queued, ever
        self._done = 0  # ... and done with
        self._progress = trio.Event()
        self._committed = trio.Event()  # set by a commit the next sync has not covered

    @property
    def last_seq(self) -> int:
        """The newest seq appended (or given out before this writer started)."""
        return self._last_seq

    def append_nowait(self, entry: StoredEntry, on_done: OnDone | None = None) -> None:
        """Queue `entry` for the next commit; never blocks.

        Raises ValueError if its seq goes backwards (or, for a message, is not new), and
        trio.ClosedResourceError once the writer's task has ended.
        """
        # (_check_open's and _kick's tests inline: the room calls this for every message)
        if self._closed:
            self._check_open()
        seq = entry.seq
        if seq <= self._last_seq and (seq < self._last_seq or entry.type == MESSAGE):
            raise ValueError(
                f"{entry.type} seq {seq} comes after message {self._last_seq}: a message "
                "needs a new one, anything else at least that"
            )
        self._last_seq = seq
        self._queue.append((entry, on_done))
        self._asked += 1
        if not (self._in_flight or self._submit_soon):
            self._kick()

    def set_ban_nowait(self, ban: BanEntry | None, address: str) -> None:
        """Queue a ban on `address` (None: the ban was lifted) for the next commit."""
        self._check_open()
        self._bans.pop(address, None)
        self._bans[address] = ban
        self._ban_changes += 1
        self._asked += 1
        self._kick()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the history writer has stopped")

    def _kick(self) -> None:
        """Start a commit of what is queued, unless one runs (its end starts the next)."""
        if self._in_flight or self._token is None or self._submit_soon:
            return
        # At the end of this turn of the loop, not now: everything appended in the same turn
        # (5,000 members joining, a reader's whole buffer of lines) goes in one commit, and a
        # failing disk's at-once acknowledgement never runs inside the caller's own change.
        self._submit_soon = True
        self._token.run_sync_soon(self._submit)

    async def flush(self) -> None:
        """Wait until everything queued before this call is done with (`on_done` ran)."""
        target = self._asked
        while self._done < target:
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit what is queued until cancelled; then once more, the disk failing or not."""
        self._token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sync_periodically)
                task_status.started()
                self._kick()  # what was queued before the writer ran
                await self._watch()
        finally:
            self._closed = True
            with trio.CancelScope(shield=True):
                await self._last_commit()
            self._token = None
            if self._crashed is not None:
                raise self._crashed
            if self._unsaved or self._unsaved_bans:
                log.error(
                    "%d history entries and %d ban changes could not be saved: %s",
                    len(self._unsaved),
                    len(self._unsaved_bans),
                    self.failing,
                )

    async def _watch(self) -> None:
        """Retry what the disk refused when it is due; raise what went wrong in a callback."""
        while True:
            self._wakeup = trio.Event()
            if self._crashed is not None:
                raise self._crashed
            if self._in_flight or not (self._unsaved or self._unsaved_bans):
                await self._wakeup.wait()
                continue
            with trio.move_on_at(self._retry_at):
                await self._wakeup.wait()
            if not self._in_flight and trio.current_time() >= self._retry_at:
                self._submit()

    async def _last_commit(self) -> None:
        while self._in_flight:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
        self._final = True
        while True:
            if not self._in_flight:
                if not (self._queue or self._bans):
                    return
                self._submit()  # a batch at a time (MAX_BATCH), the disk failing or not
                continue
            await self._wakeup.wait()
            self._wakeup = trio.Event()

    async def _sync_periodically(self) -> None:
        while True:
            await self._committed.wait()
            await trio.sleep(SYNC_SECONDS)
            self._committed = trio.Event()
            try:
                await trio.to_thread.run_sync(self.store.sync)
            except HistoryError as exc:
                log.warning("%s", exc)

    def _submit(self) -> None:
        """Hand what is queued (and what the disk refused before) to the history's process."""
        self._submit_soon = False
        if self._in_flight:
            return
        pending, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        bans, self._bans = self._bans, {}
        done, self._ban_changes = len(pending) + self._ban_changes, 0
        if self.failing is not None and not self._final and trio.current_time() < self._retry_at:
            # Known to fail: no point making these wait for the disk.
            self._keep_unsaved([entry for entry, _ in pending], bans)
            self._finish(pending, done, saved=False)
            if self._queue:
                self._kick()
            return
        batch = [*self._unsaved, *(entry for entry, _ in pending)]
        changes = self._unsaved_bans | bans
        if not batch and not changes:
            return
        self._in_flight = True
        self._process.commit_nowait(
            self._path,
            batch,
            last_seq=self._last_seq,
            bans=[(ban, address) for address, ban in changes.items()],
            again=bool(self._unsaved),  # they may have been committed by a process that died
            on_done=partial(self._landed, pending, done, batch, changes),
        )

    def _landed(
        self,
        pending: list[tuple[StoredEntry, OnDone | None]],
        done: int,
        batch: list[StoredEntry],
        changes: dict[str, BanEntry | None],
        result: outcome.Outcome[None],
    ) -> None:
        """A commit ended (called by the process's task): acknowledge it, start the next."""
        self._in_flight = False
        self._wakeup.set()
        try:
            if isinstance(result, outcome.Error) and isinstance(result.error, HistoryError):
                self._retry_at = trio.current_time() + RETRY_SECONDS
                self._unsaved.clear()
                self._unsaved_bans.clear()
                self._keep_unsaved(batch, changes)
                self._set_failing(str(result.error))
                self._finish(pending, done, saved=False)
            else:
                result.unwrap()  # anything but a HistoryError is a bug: `run` raises it
                self._unsaved.clear()
                self._unsaved_bans.clear()
                self._committed.set()
                self._set_failing(None)
                if self._queue or self._bans:
                    # The next commit now, before this one's entries go out: their fan-out can
                    # hold the loop for tens of milliseconds, and a commit scheduled for later
                    # waited for it (50 ms gaps between commits in a burst; see the docs).
                    self._submit()
                self._finish(pending, done, saved=True)
            if self._queue or self._bans:
                self._kick()
        except BaseException as exc:  # raised here, it would end the process's task
            self._crashed = exc

    def _keep_unsaved(self, entries: list[StoredEntry], bans: dict[str, BanEntry | None]) -> None:
        self._unsaved.extend(entries)
        for address, ban in bans.items():
            self._unsaved_bans.pop(address, None)
            self._unsaved_bans[address] = ban
        dropped = len(self._unsaved) - MAX_UNSAVED
        if dropped > 0:
            for _ in range(dropped):
                self._unsaved.popleft()
            self.given_up += dropped
            log.warning("gave up on %d unsaved history entries (too many to hold)", dropped)

    def _finish(
        self, pending: list[tuple[StoredEntry, OnDone | None]], done: int, *, saved: bool
    ) -> None:
        self._done += done
        for _, on_done in pending:
            if on_done is not None:
                on_done(saved)
        self._on_flushed(len(pending))
        self._progress.set()
        self._progress = trio.Event()

    def _set_failing(self, reason: str | None) -> None:
        if reason == self.failing:
            return
        if reason is None:
            log.info("history is being saved again")
        else:
            log.warning("history is not being saved: %s", reason)
        self.failing = reason
        self._on_failing(reason)


async def prune_periodically(
    store: HistoryStore,
    settings: HistorySettings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply retention now and every PRUNE_EVERY_SECONDS, in a worker thread, until cancelled."""
    task_status.started()
    while True:
        try:
            removed = await trio.to_thread.run_sync(
                partial(store.prune, settings.keep_days, settings.keep_entries)
            )
        except HistoryError as exc:
            log.warning("cannot apply history retention: %s", exc)
        else:
            if removed:
                log.info("removed %d history entries past retention", removed)
        await trio.sleep(PRUNE_EVERY_SECONDS)
