"""When the backplane's reader and writer count as under load (backplane_link.Pace)."""

from __future__ import annotations

from multichat.server.backplane_link import LINGER_AFTER, LINGER_SECONDS, Pace


def test_under_load_is_linger_after_entries_within_the_last_linger() -> None:
    pace = Pace()
    assert not pace.under_load(0.0)
    for k in range(LINGER_AFTER - 1):
        pace.record(k * 0.0001, 1)
    assert not pace.under_load(0.002)
    pace.record(0.002, 1)
    assert pace.under_load(0.002)
    # The window slides: the oldest entries no longer count.
    assert not pace.under_load(LINGER_SECONDS + 0.00005)


def test_a_steady_rate_below_the_threshold_never_counts() -> None:
    pace = Pace()
    # One entry a read, at nine tenths of the threshold (960 a second): never under load.
    step = LINGER_SECONDS / LINGER_AFTER / 0.9
    for k in range(5_000):
        pace.record(k * step, 1)
        assert not pace.under_load(k * step)


def test_one_big_read_counts_and_then_ages_out() -> None:
    pace = Pace()
    pace.record(1.0, 500)
    assert pace.under_load(1.0 + LINGER_SECONDS / 2)
    assert not pace.under_load(1.0 + LINGER_SECONDS + 1e-9)


def test_what_is_recorded_is_forgotten_without_being_asked() -> None:
    # A writer asks only while it lingers: a room posting every 20 ms never asks.
    pace = Pace()
    for k in range(10_000):
        pace.record(k * 0.02, 1)
    assert len(pace) == 1
