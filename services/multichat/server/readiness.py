"""Waiting for members' input: one epoll of the server's own for every member's socket.

A member's connection spends nearly all its life waiting for its next line, and 5,000 members
wait at once. In trio's `wait_readable`, each wait holds three coroutine frames more than
here, an abort closure and trio's record of the socket, about 1.1 KiB of a connection's memory
(tracemalloc, docs/benchmarks.md), and re-arms the socket with an `epoll_ctl` call each time. Here a
member's socket is registered once, edge-triggered, in an epoll of the server's own; a waiting
session parks with `trio.lowlevel.wait_task_rescheduled`, and one task, which trio wakes when
that epoll has events, reschedules the sessions whose sockets have input. This is how trio
builds its own waits, on its own epoll.

An event for a session that is not waiting (it is still handling what it read) is kept: its
next wait returns at once, and finds either more input or nothing (then it waits again).
Where `select.epoll` does not exist (macOS, Windows), and for any socket not registered (a
visitor, or a server whose task is not running), a wait is trio's `wait_readable`.
"""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Awaitable

import trio

# At most this many sockets' events a turn of the waking task, so that a turn's list stays
# small; the rest wait in the epoll for the next turn (edge-triggered, nothing is lost). libuv
# takes 1,024 a call too.
MAX_EVENTS = 1024
# What wakes a parked session: input, or the peer's end (EPOLLHUP and EPOLLERR always do).
if sys.platform == "linux":
    WAKE_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET


class _Waiter:
    """One registered socket: its session's task while it waits, or whether input came while
    it did not. Also the abort function trio calls to take back the wait (a cancel)."""

    __slots__ = ("ready", "task")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        # Input may have come before the registration, and an edge-triggered epoll reports
        # only what comes after: the first wait looks first.
        self.ready = True

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


class Readiness:
    """The server's members' sockets, waited on together. Run `run` in a task first."""

    def __init__(self, *, use_epoll: bool = sys.platform == "linux") -> None:
        self._use_epoll = use_epoll
        self._epoll: select.epoll | None = None  # while `run` runs
        self._waiters: dict[int, _Waiter] = {}  # by descriptor

    def __len__(self) -> int:
        """Sockets registered."""
        return len(self._waiters)

    def register(self, sock: socket.socket) -> None:
        """Wait for `sock` here from now on, until `unregister`; nothing without `run`."""
        if self._epoll is None:
            return
        fd = sock.fileno()
        self._epoll.register(fd, WAKE_EVENTS)
        self._waiters[fd] = _Waiter()

    def unregister(self, sock: socket.socket) -> None:
        """Stop waiting for `sock` here (before it is closed); a no-op if it never was."""
        fd = sock.fileno()
        waiter = self._waiters.pop(fd, None)
        if waiter is None:
            return
        if waiter.task is not None:
            # A session unregisters its own socket, never while it waits; if another task
            # does, the waiting one is woken, and its next wait is trio's.
            trio.lowlevel.reschedule(waiter.task)
        if self._epoll is not None:
            self._epoll.unregister(fd)

    def wait_readable(self, sock: socket.socket) -> Awaitable[None]:
        """Wait until `sock` may have input (it may not: then read and wait again).

        Not an async function: the caller awaits what it returns (hence the `noqa`s), one
        coroutine frame fewer for every waiting member.
        """
        waiter = self._waiters.get(sock.fileno())
        if waiter is None:
            return trio.lowlevel.wait_readable(sock)  # noqa: ASYNC105
        if waiter.ready:
            waiter.ready = False
            return trio.lowlevel.checkpoint()  # noqa: ASYNC105
        waiter.task = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(waiter)  # noqa: ASYNC105

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake the sessions whose sockets have input, until cancelled."""
        if not self._use_epoll:
            task_status.started()
            await trio.sleep_forever()
        self._epoll = epoll = select.epoll()
        waiters = self._waiters
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0, MAX_EVENTS):
                    waiter = waiters.get(fd)
                    if waiter is None:
                        continue  # unregistered since
                    task = waiter.task
                    if task is None:
                        waiter.ready = True
                    else:
                        waiter.task = None
                        trio.lowlevel.reschedule(task)
        finally:
            self._epoll = None
            # Registered sockets go back to trio's waits; waiting sessions wait again there.
            for waiter in waiters.values():
                if waiter.task is not None:
                    trio.lowlevel.reschedule(waiter.task)
            waiters.clear()
            trio.lowlevel.notify_closing(epoll.fileno())
            epoll.close()
