"""When a lost connection is tried again, and when the trying stops: the client's policy.

No I/O here. `ChatClient` (connection.py) waits `delay(attempt)` before each try, and asks
`after_refusal` what a room's refusal to let it back in means. The browser page follows the same
policy with the same numbers (`client/web/reconnect.js`).
"""

from __future__ import annotations

import random
from typing import Literal

# About 40 s of trying in all (0.5, 1, 2, 4, 8, 8, ... s): long enough for a room to restart.
RECONNECT_TRIES = 8
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 8.0
# The server keeps a connection that went silent up to 150 s (its idle limit) before it lets
# the name go; a rejoin refused with "name_taken" keeps trying that long, not using up tries.
NAME_HELD_SECONDS = 160.0
# Spread members' retries so a restarted room is not hit by all of them in the same instant.
RECONNECT_JITTER = 0.2

# Login refusals that retrying cannot fix; others (a name still held by our old connection, a
# room restarting or full) may clear up while reconnecting.
# A room gone after a restart (the host no longer makes it) is one too.
FATAL_LOGIN = frozenset(
    {"bad_password", "bad_name", "unsupported_version", "bad_invite", "no_such_room", "bad_room"}
)
# The server closed on us on purpose; coming back would do it again (or be refused).
KICKS = frozenset({"flooding", "kicked", "banned"})

Verdict = Literal["kicked", "give_up", "retry", "retry_uncounted"]


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect try `attempt` (1-based), before jitter."""
    return min(RECONNECT_MAX_DELAY, RECONNECT_FIRST_DELAY * 2.0 ** (attempt - 1))


def delay(attempt: int) -> float:
    """Seconds to wait before reconnect try `attempt`, jittered."""
    return backoff(attempt) * random.uniform(1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER)


def after_refusal(code: str, lost_for: float) -> Verdict:
    """What the room's refusal (`code`) of a rejoin means, `lost_for` seconds after the loss:
    banned meanwhile, no use trying again, try again, or try again without counting the try
    (our old connection still holds the name, and will let it go)."""
    if code == "banned":
        return "kicked"
    if code in FATAL_LOGIN:
        return "give_up"
    if code == "name_taken" and lost_for < NAME_HELD_SECONDS:
        return "retry_uncounted"
    return "retry"
