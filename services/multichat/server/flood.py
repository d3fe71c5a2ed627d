"""Flood control: a burst, then a steady rate, enforced by delaying the sender (fakelag).

Dropping a flooder's lines would lose what it said; delaying them (ergo and InspIRCd call it
fakelag) loses nothing and costs the flooder only time. Pure: the caller passes the time.
"""

from __future__ import annotations


class Fakelag:
    """ergo-style flood control: a burst, then a steady rate, enforced by delaying the sender."""

    __slots__ = ("burst", "held_since", "per_second", "tokens", "updated")

    def __init__(self, burst: int, per_second: float, now: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self.tokens = float(burst)
        self.updated = now
        self.held_since: float | None = None  # when the sender started being held back

    def charge(self, now: float) -> float:
        """Count one message; return how long to wait before reading the next one."""
        if self.per_second <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        self.tokens -= 1
        if self.tokens >= 0:
            self.held_since = None
            return 0.0
        if self.held_since is None:
            self.held_since = now
        return -self.tokens / self.per_second

    def held_for(self, now: float) -> float:
        return 0.0 if self.held_since is None else now - self.held_since
