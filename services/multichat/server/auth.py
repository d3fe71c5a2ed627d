"""Who may come in: the room password, the control token, and the throttles in front of them.

The password is never kept or compared as plain text: only an HMAC-SHA256 digest under a
random per-process key, compared in constant time. A slow hash would make every join slow;
guessing is stopped by `Throttle` instead, before any hashing is done. Pure: the caller passes
the time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque

# A sliding window of one minute, as the limits are stated per minute.
WINDOW_SECONDS = 60.0
# Forget idle sources, so a scan from many addresses cannot grow the table without bound.
MAX_TRACKED_SOURCES = 10_000


class Secret:
    """A secret kept only as a keyed digest; `matches` compares in constant time."""

    def __init__(self, value: str) -> None:
        self._key = secrets.token_bytes(32)
        self._digest = self._mac(value)

    def _mac(self, value: str) -> bytes:
        return hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def matches(self, attempt: str) -> bool:
        return hmac.compare_digest(self._digest, self._mac(attempt))

    def __repr__(self) -> str:
        return "Secret(<hidden>)"


class Throttle:
    """At most `per_source` events a minute from one source and `total` from all of them."""

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self._by_source: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()

    def allowed(self, source: str, now: float) -> bool:
        """Whether `source` may try again now."""
        self._expire(self._all, now)
        if len(self._all) >= self.total:
            return False
        times = self._by_source.get(source)
        if times is None:
            return True
        self._expire(times, now)
        if not times:
            del self._by_source[source]
            return True
        return len(times) < self.per_source

    def retry_after(self, source: str, now: float) -> float:
        """Seconds until `source` may try again (0 if it may now)."""
        if self.allowed(source, now):
            return 0.0
        times = self._by_source.get(source)
        waits = [self._all[0] + WINDOW_SECONDS - now] if len(self._all) >= self.total else []
        if times and len(times) >= self.per_source:
            waits.append(times[0] + WINDOW_SECONDS - now)
        return max(0.0, max(waits, default=0.0))

    def record(self, source: str, now: float) -> None:
        """Count one event (a failed password) from `source`."""
        if source not in self._by_source and len(self._by_source) >= MAX_TRACKED_SOURCES:
            for stale in [s for s, t in self._by_source.items() if not t or t[-1] <= now - 60]:
                del self._by_source[stale]
            if len(self._by_source) >= MAX_TRACKED_SOURCES:
                self._by_source.pop(next(iter(self._by_source)))
        self._by_source.setdefault(source, deque()).append(now)
        self._all.append(now)


class Gate:
    """Counts live connections per source and unauthenticated ones, against the limits."""

    def __init__(self, per_source: int, unauth_per_source: int, unauth_total: int) -> None:
        self.per_source = per_source
        self.unauth_per_source = unauth_per_source
        self.unauth_total = unauth_total
        self._open: dict[str, int] = {}
        self._unauth: dict[str, int] = {}
        self._unauth_total = 0

    def admit(self, source: str) -> str | None:
        """Count a new connection from `source`, or return why it is refused."""
        if self._open.get(source, 0) >= self.per_source:
            return f"too many connections from your address (at most {self.per_source})"
        if self._unauth.get(source, 0) >= self.unauth_per_source:
            return "too many unfinished logins from your address; finish one first"
        if self._unauth_total >= self.unauth_total:
            return "the server is busy with logins; try again in a few seconds"
        self._open[source] = self._open.get(source, 0) + 1
        self._unauth[source] = self._unauth.get(source, 0) + 1
        self._unauth_total += 1
        return None

    def authenticated(self, source: str) -> None:
        """The connection from `source` finished its login."""
        self._drop(self._unauth, source)
        self._unauth_total -= 1

    def release(self, source: str, *, authenticated: bool) -> None:
        """The connection from `source` closed."""
        self._drop(self._open, source)
        if not authenticated:
            self._drop(self._unauth, source)
            self._unauth_total -= 1

    @staticmethod
    def _drop(counts: dict[str, int], source: str) -> None:
        left = counts.get(source, 0) - 1
        if left > 0:
            counts[source] = left
        else:
            counts.pop(source, None)


def new_token() -> str:
    """A random control token, for `down` and `status` to prove themselves."""
    return secrets.token_urlsafe(24)
