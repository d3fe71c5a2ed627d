"""The client's reconnect policy (reconnect.py), alone: what a refused rejoin means, and when."""

from __future__ import annotations

import re
from importlib import resources
from itertools import pairwise

import pytest

from multichat.client.reconnect import (
    FATAL_LOGIN,
    KICKS,
    NAME_HELD_SECONDS,
    RECONNECT_FIRST_DELAY,
    RECONNECT_JITTER,
    RECONNECT_MAX_DELAY,
    RECONNECT_TRIES,
    after_refusal,
    backoff,
    delay,
)


def test_a_ban_ends_it_as_a_kick_and_a_fatal_refusal_as_given_up() -> None:
    assert after_refusal("banned", 0.0) == "kicked"
    for code in sorted(FATAL_LOGIN):
        assert after_refusal(code, 0.0) == "give_up", code


def test_a_held_name_is_waited_out_without_using_up_tries() -> None:
    assert after_refusal("name_taken", 0.0) == "retry_uncounted"
    assert after_refusal("name_taken", NAME_HELD_SECONDS - 1) == "retry_uncounted"
    # Held longer than the server ever holds a silent connection's name: somebody else has it.
    assert after_refusal("name_taken", NAME_HELD_SECONDS) == "retry"


@pytest.mark.parametrize("code", ["room_full", "shutting_down", "locked", "unavailable", "new"])
def test_anything_else_may_clear_up_and_is_tried_again(code: str) -> None:
    assert after_refusal(code, 0.0) == "retry"


def test_the_delays_double_up_to_the_cap_and_stay_within_their_jitter() -> None:
    plain = [backoff(n) for n in range(1, RECONNECT_TRIES + 1)]
    assert plain == sorted(plain) and plain[-1] == RECONNECT_MAX_DELAY
    assert all(b == 2 * a or b == RECONNECT_MAX_DELAY for a, b in pairwise(plain))
    for attempt, base in enumerate(plain, start=1):
        for _ in range(50):
            assert base * (1 - RECONNECT_JITTER) <= delay(attempt) <= base * (1 + RECONNECT_JITTER)


def test_the_page_reconnects_by_the_same_numbers_and_codes() -> None:
    # reconnect.js says it follows this policy; a change to one must be made to the other.
    source = resources.files("multichat").joinpath("client", "web", "reconnect.js").read_text()

    def number(name: str) -> float:
        found = re.search(rf"^(?:export )?const {name} = ([0-9.]+);", source, re.M)
        assert found, f"reconnect.js has no {name}"
        return float(found.group(1))

    def codes(name: str) -> frozenset[str]:
        found = re.search(
            rf"^(?:export )?const {name} = new Set\(\[(.*?)\]\);", source, re.M | re.S
        )
        assert found, f"reconnect.js has no {name}"
        return frozenset(re.findall(r'"([a-z_]+)"', found.group(1)))

    assert number("RECONNECT_TRIES") == RECONNECT_TRIES
    assert number("RECONNECT_FIRST_MS") == RECONNECT_FIRST_DELAY * 1000
    assert number("RECONNECT_MAX_MS") == RECONNECT_MAX_DELAY * 1000
    assert number("RECONNECT_JITTER") == RECONNECT_JITTER
    assert number("NAME_HELD_MS") == NAME_HELD_SECONDS * 1000
    assert codes("FATAL_LOGIN") == FATAL_LOGIN
    assert codes("KICKS") == KICKS
