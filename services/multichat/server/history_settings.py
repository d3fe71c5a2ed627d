"""How much history a room keeps and replays, from the `[history]` table of the config file.

The same TOML file as `[limits]` (passed as `--config`); `load_limits` ignores this table and
`load_history_settings` ignores that one. docs/history.md lists the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .limits import RESUME_MAX, LimitsError, parse_table, read_table

# ergo expires history after a week by default (`history.restrictions.expire-time: 1w`); a
# room of friends is quieter than an IRC channel, and a month covers a holiday away.
KEEP_DAYS = 30.0
# About 20 MB of chat at a typical 200 bytes an entry: a busy room's file stays small enough to
# copy around and to prune in seconds.
KEEP_ENTRIES = 100_000


class HistorySettingsError(LimitsError):
    """A `[history]` table that cannot be used; the message says what to fix.

    A `LimitsError`, so the commands that already report a bad `[limits]` table report this
    one the same way.
    """


@dataclass(frozen=True)
class HistorySettings:
    """Retention and replay; 0 for `keep_days` or `keep_entries` means no bound of that kind."""

    keep_days: float = KEEP_DAYS
    keep_entries: int = KEEP_ENTRIES
    # The same limit as `Limits.resume_max` (its reason is there), settable here too, beside
    # the rest of history.
    resume_max: int = RESUME_MAX


def parse_history_settings(table: dict[str, object]) -> HistorySettings:
    """The settings of a `[history]` table; unknown keys and bad values are errors."""
    return parse_table(
        table,
        HistorySettings(),
        unknown="[history] key",
        label="[history]",
        error=HistorySettingsError,
    )


def load_history_settings(path: Path) -> HistorySettings:
    """The settings in the `[history]` table of the TOML file at `path` (defaults if none)."""
    return parse_history_settings(read_table(path, "history", HistorySettingsError))
