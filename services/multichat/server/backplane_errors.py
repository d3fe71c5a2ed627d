"""What the backplane raises, in a module of its own: the rooms and the host handle these
whether or not a backplane is configured, and importing them must not import Redis's client.

coredis takes about 0.4 s to import, more than the rest of `multichat serve` together; only a
server given `--backplane` loads it (listeners.py imports `Backplane` when it needs one).
"""

from __future__ import annotations


class BackplaneError(Exception):
    """The backplane cannot be used: a bad address, an unreachable Redis at start, a password
    other servers do not share. The message is one line, for the host."""


class BackplaneUnavailable(BackplaneError):
    """Redis cannot take this now (the server answers `error unavailable`).

    `maybe_published` is True when the request had been sent and its answer was lost: the
    entry may be in the stream after all, and if it is, it reaches every server (its sender's
    too) as any other; its `Origin.ref` is `ref`.
    """

    def __init__(self, message: str, *, maybe_published: bool = False, ref: int = 0) -> None:
        super().__init__(message)
        self.maybe_published = maybe_published
        self.ref = ref


class NameTaken(Exception):
    """A member on some server of the backplane has this name (or one that looks like it)."""


class NotJoined(Exception):
    """The seat is no longer in its room: it left, or its server was taken for dead."""
