"""Fakelag on its own: a burst goes through, then the sender is held to the rate."""

from __future__ import annotations

import pytest

from multichat.server.flood import Fakelag


def test_a_burst_goes_through_then_each_message_waits_its_turn() -> None:
    lag = Fakelag(burst=5, per_second=2.0, now=0.0)
    assert [lag.charge(0.0) for _ in range(5)] == [0.0] * 5
    assert lag.charge(0.0) == pytest.approx(0.5)
    assert lag.charge(0.5) == pytest.approx(0.5)  # sent as soon as allowed: still held
    assert lag.held_for(0.5) == pytest.approx(0.5)


def test_a_pause_earns_the_burst_back() -> None:
    lag = Fakelag(burst=5, per_second=2.0, now=0.0)
    for _ in range(6):
        lag.charge(0.0)
    assert lag.charge(10.0) == 0.0  # ten quiet seconds refill the bucket, up to the burst
    assert lag.held_for(10.0) == 0.0
    assert [lag.charge(10.0) for _ in range(4)] == [0.0] * 4
    assert lag.charge(10.0) > 0


def test_a_rate_of_zero_turns_it_off() -> None:
    lag = Fakelag(burst=5, per_second=0, now=0.0)
    assert all(lag.charge(0.0) == 0.0 for _ in range(1000))
