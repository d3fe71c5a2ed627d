"""The backplane's link to Redis: its clients, whether Redis answers now, and how long to wait
before asking again.

Redis going away is an expected state, not an error: the link says so in one line when it is
lost and one when it is back, and everything that needs Redis meanwhile either fails at once
(`BackplaneUnavailable`: a member's `say` is refused with `unavailable`) or waits for it (a
leave, which must reach the other servers in the end). Only the tasks that keep the node alive
decide that Redis is back (backplane_nodes.py), after checking what it still holds.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy
from coredis.typing import RedisError

from .backplane_address import BackplaneAddress
from .backplane_errors import BackplaneUnavailable
from .backplane_resp import ReplyError

log = logging.getLogger("multichat.backplane")

# A script runs in well under a millisecond; a Redis that has not answered in this long is
# gone or stuck, and a member waiting longer for `unavailable` would think the room froze.
COMMAND_SECONDS = 2.0
# Connecting on a LAN takes a millisecond; a host that drops packets would otherwise hold a
# publish for the kernel's SYN retries (over two minutes on Linux).
CONNECT_SECONDS = 2.0
# A blocked XREAD returns this often even when nothing is said, so a reader notices a dead
# connection within about this long plus COMMAND_SECONDS (Redis itself sends nothing while
# a client blocks).
READ_BLOCK_SECONDS = 5.0
# Under load, a read or a batch of writes goes at most this often. A command costs this
# client 0.07 to 0.1 ms of CPU on the test machine whatever its size (a round trip: two system
# calls and a wake-up each way), and Redis's time besides, and every read wakes the fan-out
# once more, so at thousands of messages a second the number of commands is what lingering
# saves. At 4,900 messages a second into one room (docs/benchmarks.md), 5 ms cost 1.4x to 1.55x
# one server's CPU per delivery, 10 ms 1.23x to 1.35x with a p50 of 15 to 17 ms, 15 ms 1.13x to
# 1.21x with a p50 of 19 to 21 ms and the same p99, 20 ms 1.15x with a p50 of 26 ms. Nobody
# reads a room of a thousand lines a second line by line: a few milliseconds there go unseen,
# while the CPU they save is every member's. Kafka's producer lingers 5 ms by default
# (`linger.ms`, since 4.0) and is raised for throughput as here.
LINGER_SECONDS = 0.015
# ... and "under load" is this many entries read, or ops sent, within the last LINGER_SECONDS:
# about 1,070 a second or more. Below that the lingering stops by itself: a room of people
# talking pays no wait.
LINGER_AFTER = 16
# Retrying a lost Redis: the first retry at once (a blip), then doubling up to a second, so a
# Redis that is back is noticed within a second, and a dead one costs one attempt a second.
FIRST_RETRY_SECONDS = 0.05
MAX_RETRY_SECONDS = 1.0

# What a lost or unreachable Redis raises through coredis or a RespConnection (TimeoutError
# for COMMAND_SECONDS without an answer; OSError for a refused or broken connection and for
# what a TLS handshake or a resolver raise as they are).
LINK_ERRORS: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    OSError,
)
# What a Redis that answers may refuse with (out of memory, a failed disk save, a replica):
# the operation fails, the link stays up.
REFUSALS: tuple[type[BaseException], ...] = (coredis.exceptions.ResponseError, ReplyError)
# Anything coredis raises: at start, each is a reason not to start, in one line.
START_ERRORS: tuple[type[BaseException], ...] = (*LINK_ERRORS, RedisError)

RedisClient = coredis.Redis[str]


class Pace:
    """How many entries a reader read, or a writer sent, lately: whether it is under load.

    Counted over a window, not read by read: unlingered, a blocked read answers as soon as one
    entry comes, so a flood on a fast machine is many reads of one entry each.
    """

    def __init__(self) -> None:
        self._recent: deque[tuple[float, int]] = deque()  # (when, how many), oldest first
        self._count = 0

    def record(self, now: float, entries: int) -> None:
        # Forgotten here too, not only when asked: a writer asks only within a linger, so a
        # room posting every 20 ms would otherwise keep every batch it ever sent.
        self._forget_before(now - LINGER_SECONDS)
        self._recent.append((now, entries))
        self._count += entries

    def under_load(self, now: float) -> bool:
        """LINGER_AFTER entries or more within the last LINGER_SECONDS."""
        self._forget_before(now - LINGER_SECONDS)
        return self._count >= LINGER_AFTER

    def __len__(self) -> int:
        """How many reads or batches are still counted."""
        return len(self._recent)

    def _forget_before(self, start: float) -> None:
        recent = self._recent
        while recent and recent[0][0] <= start:
            self._count -= recent.popleft()[1]


T = TypeVar("T")


async def unless_cancelled() -> None:
    """Raise Cancelled if the caller is being cancelled. coredis reports a connection it was
    still setting up when a cancel came as lost (ConnectionError): that is no news about Redis,
    so every handler of LINK_ERRORS asks this first."""
    await trio.lowlevel.checkpoint_if_cancelled()


def describe(exc: BaseException) -> str:
    """One line for the log: coredis wraps the reason (refused, reset) as the cause."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text.splitlines()[0]


async def answer_within(seconds: float, command: Awaitable[T]) -> T:
    """`command`'s answer, or TimeoutError (a LINK_ERROR) after `seconds` without one."""
    with trio.move_on_after(seconds):
        return await command
    raise TimeoutError(f"Redis did not answer within {seconds:.0f} s")


def open_client(address: BackplaneAddress, node: str, *, stream_timeout: float) -> RedisClient:
    """A client (a pool of connections, opened with `async with`) for `address`.

    coredis retries a failed command twice by default; not here: a retried script could
    append an entry twice, and the link retries what may be retried itself.
    """
    return coredis.Redis(
        host=address.host,
        port=address.port,
        db=address.db,
        username=address.username,
        password=address.password,
        ssl_context=ssl.create_default_context() if address.tls else None,
        decode_responses=True,
        stream_timeout=stream_timeout,
        connect_timeout=CONNECT_SECONDS,
        retry_policy=NoRetryPolicy(),
        client_name=f"multichat-{node}",
    )


class Link:
    """Whether Redis answers, as the backplane last found out; logs each change once."""

    def __init__(self, address: BackplaneAddress, on_change: Callable[[bool], None]) -> None:
        self.address = address
        self.up = False
        self.reason = "not connected yet"
        self._on_change = on_change
        self._back = trio.Event()
        self.changed = trio.Event()  # set at each change, then replaced

    def check(self, ref: int = 0) -> None:
        """Raise BackplaneUnavailable unless Redis is up."""
        if not self.up:
            raise BackplaneUnavailable(f"the backplane is unreachable: {self.reason}", ref=ref)

    def lost(self, exc: BaseException) -> None:
        """A command failed for want of Redis: say so, once."""
        self.reason = describe(exc)
        if not self.up:
            return
        self.up = False
        self._back = trio.Event()
        log.warning("backplane %s lost: %s", self.address, self.reason)
        self._changed(False)

    def back(self, *, quiet: bool = False) -> None:
        """Redis answers again and holds what the node needs (the first time: quietly)."""
        if self.up:
            return
        self.up = True
        self._back.set()
        if not quiet:
            log.info("backplane %s is back", self.address)
            self._changed(True)

    def _changed(self, up: bool) -> None:
        self.changed.set()
        self.changed = trio.Event()
        self._on_change(up)

    async def wait_up(self) -> None:
        await self._back.wait()


class Backoff:
    """The pauses between retries: FIRST_RETRY_SECONDS, doubling up to MAX_RETRY_SECONDS."""

    def __init__(self) -> None:
        self._next = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def next(self) -> float:
        """The next pause, counting it as taken."""
        delay = self._next
        self._next = min(MAX_RETRY_SECONDS, max(FIRST_RETRY_SECONDS, delay * 2))
        return delay

    async def sleep(self) -> None:
        await trio.sleep(self.next())


def quiet_coredis() -> None:
    """coredis logs every dropped connection with a traceback at INFO; the link says it in one
    line instead. Its errors stay, in one line each."""
    logger = logging.getLogger("coredis")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())


class _OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return False
        record.exc_info = None
        record.exc_text = None
        return True
