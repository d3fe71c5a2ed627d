"""textmode's clock: `HH:MM` by the minute, as strftime gives it, in any time zone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multichat.protocol.textmode import clock

# 1972 on: since then every time zone's offset is whole minutes (Monrovia's -0:44:30 ended).
SINCE_1972 = 63_072_000.0
TO_2100 = 4_102_444_800.0


@given(st.floats(min_value=SINCE_1972, max_value=TO_2100))
def test_clock_is_strftimes_hours_and_minutes(ts: float) -> None:
    assert clock(ts) == time.strftime("%H:%M", time.localtime(ts))


def test_clock_turns_at_each_minute() -> None:
    minute = 1_700_000_040.0  # a whole minute
    assert clock(minute - 0.001) != clock(minute) == clock(minute + 59.999)


@pytest.mark.parametrize(
    "zone", ["Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns", "Europe/London"]
)
def test_clock_in_zones_a_quarter_or_half_hour_off(zone: str) -> None:
    # Its own Python: the zone is read once per process. Every 7,777 s over 1972 to 2040
    # crosses each zone's daylight-saving changes many times over.
    code = (
        "import time\n"
        "from multichat.protocol.textmode import clock\n"
        "wrong = [t for t in range(63_072_000, 2_208_988_800, 7_777)\n"
        "         if clock(t + 0.5) != time.strftime('%H:%M', time.localtime(t + 0.5))]\n"
        "print(len(wrong))\n"
    )
    env = {**os.environ, "TZ": zone}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "0", done.stderr
