"""Every limit a public room enforces, in one place, with its default and the reason for it.

The defaults are strict, for a room open to the internet. A host can change any of them in a
TOML file passed as `--config` (a `[limits]` table, keys as below); the README lists them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

# Chat messages of IRC-like size plus long pastes; ergo allows 4,096 bytes of text by default.
MAX_TEXT_CHARS = 4000
# ergo and InspIRCd drop a client whose send queue passes 96 KiB ("SendQ exceeded").
OUTBOX_BYTES = 96 * 1024
# ssh-chat and ergo give an unregistered client tens of seconds; a friend typing a password
# into nc needs that long, a port scanner should not get longer.
HANDSHAKE_SECONDS = 20.0
# Before its first byte a connection is either a program (which speaks at once) or a person
# waiting for a prompt: a third of a second tells them apart without anyone noticing.
TEXT_PAUSE_SECONDS = 0.3
# IRC servers ping after 90 s of silence and give up about a minute later (ngIRCd: 120/60).
IDLE_PING_SECONDS = 90.0
IDLE_CLOSE_SECONDS = 150.0
# A browser fetches the page's eleven files over up to 6 connections at once (the limit per
# host of Chrome, Firefox and Safari), each closed after its answer, then keeps one: room for
# that beside a member or two at the same address. (InspIRCd's <connect:localmax> of 3 counts
# IRC clients, one connection each; at 3, a browser loading the page had scripts refused.)
CONNECTIONS_PER_SOURCE = 8
# Half-open and handshaking connections may not crowd out real members; a page's files are
# fetched by visitors too, so the same 6 at once, and a member logging in, fit.
UNAUTHENTICATED_PER_SOURCE = 8
UNAUTHENTICATED_TOTAL = 256
# ssh-chat and fail2ban's defaults: a few tries a minute stops guessing, not typos.
FAILED_PASSWORDS_PER_MINUTE = 3
# Across all sources, so a botnet with many addresses cannot guess quickly either.
FAILED_PASSWORDS_GLOBAL_PER_MINUTE = 60
# ergo's fakelag: a burst of 5 lines, then one every half second.
FLOOD_BURST = 5
FLOOD_PER_SECOND = 2.0
# A sender held back continuously this long is not typing, it is flooding. 100 messages sent
# at once (a paste into nc, one line each) drain in under 50 s at the rate above.
FLOOD_KICK_SECONDS = 60.0
# How many members one room holds; each costs a few KiB.
MAX_MEMBERS = 10_000
# How many rooms one server holds, whoever made them. A room with history keeps its SQLite file
# open (twice: in the server and in its history process), and `open_rooms` lets any member
# make one: a hundred
# is a large community (Discord caps a server at 500 channels; IRC networks at 20 to 120
# channels per user), and small enough that a member making rooms cannot exhaust the host.
MAX_ROOMS = 100
# A new member sees the last few entries of the room, so a conversation has context.
HISTORY_ENTRIES = 20
# After `shutdown`, members get this long to receive what is queued for them.
SHUTDOWN_GRACE_SECONDS = 5.0
# A member back after a while gets at most this many of the messages it missed, then live
# traffic (IRCv3's chathistory servers cap a replay at a few hundred to a thousand; ZNC's
# default playback buffer is 500 lines). The `[history]` table can change it.
RESUME_MAX = 1000


@dataclass(frozen=True)
class Limits:
    """The limits of one server; construct with keywords or load with `load_limits`."""

    max_text_chars: int = MAX_TEXT_CHARS
    outbox_bytes: int = OUTBOX_BYTES
    handshake_seconds: float = HANDSHAKE_SECONDS
    text_pause_seconds: float = TEXT_PAUSE_SECONDS
    idle_ping_seconds: float = IDLE_PING_SECONDS
    idle_close_seconds: float = IDLE_CLOSE_SECONDS
    connections_per_source: int = CONNECTIONS_PER_SOURCE
    unauthenticated_per_source: int = UNAUTHENTICATED_PER_SOURCE
    unauthenticated_total: int = UNAUTHENTICATED_TOTAL
    failed_passwords_per_minute: int = FAILED_PASSWORDS_PER_MINUTE
    failed_passwords_global_per_minute: int = FAILED_PASSWORDS_GLOBAL_PER_MINUTE
    flood_burst: int = FLOOD_BURST
    flood_per_second: float = FLOOD_PER_SECOND
    flood_kick_seconds: float = FLOOD_KICK_SECONDS
    max_members: int = MAX_MEMBERS
    max_rooms: int = MAX_ROOMS
    history_entries: int = HISTORY_ENTRIES
    shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS
    resume_max: int = RESUME_MAX

    def replace(self, **changes: float) -> Limits:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_Settings = TypeVar("_Settings")


class LimitsError(Exception):
    """A config file that cannot be used; the message says what to fix."""


def parse_limits(table: dict[str, object], base: Limits = Limits()) -> Limits:
    """`base` with the values of a `[limits]` table; unknown keys and bad values are errors."""
    return parse_table(table, base, unknown="limit", label="limit", error=LimitsError)


def parse_table(
    table: dict[str, object],
    base: _Settings,
    *,
    unknown: str,
    label: str,
    error: type[LimitsError],
) -> _Settings:
    """`base` (a dataclass of numbers >= 0) with a TOML table's values; `error` for anything
    else, worded with `unknown` ("unknown limit 'x'") and `label` ("limit 'x' must be ...")."""
    fields = {f.name: f for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    changes: dict[str, float] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise error(f"unknown {unknown} {key!r}; known: {', '.join(sorted(fields))}")
        want_int = fields[name].type in ("int", int)
        ok = isinstance(value, int) if want_int else isinstance(value, int | float)
        if not ok or isinstance(value, bool) or value < 0:  # type: ignore[operator]
            kind = "a whole number" if want_int else "a number"
            raise error(f"{label} {key!r} must be {kind} >= 0, not {value!r}")
        changes[name] = value  # type: ignore[assignment]
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def read_document(path: Path, error: type[LimitsError]) -> dict[str, object]:
    """The TOML file at `path`, or `error` saying in one line why it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid TOML: {exc}") from None


def read_table(path: Path, name: str, error: type[LimitsError]) -> dict[str, object]:
    """The `[name]` table of the TOML file at `path` (empty if it has none)."""
    table = read_document(path, error).get(name, {})
    if not isinstance(table, dict):
        raise error(f"{path}: [{name}] must be a table")
    return table


def load_limits(path: Path) -> Limits:
    """The limits in the `[limits]` table of the TOML file at `path`."""
    return parse_limits(read_table(path, "limits", LimitsError))


def load_open_rooms(path: Path) -> bool:
    """The config file's top-level `open_rooms` (default false): whether a member who asks for
    a room that does not exist makes it, or is told there is none."""
    value = read_document(path, LimitsError).get("open_rooms", False)
    if not isinstance(value, bool):
        raise LimitsError(f"{path}: open_rooms must be true or false, not {value!r}")
    return value


# A server silent this long is dead, and its members leave (issue 16 asks for 15 s). It beats
# three times meanwhile, as Kafka's consumers do within a session timeout (heartbeat interval
# "no higher than 1/3" of it), so one lost beat, or a pause of a few seconds, is not a death.
NODE_TIMEOUT_SECONDS = 15.0


def load_node_timeout(path: Path, default: float) -> float:
    """The config file's `[backplane] node_timeout` (seconds; `default` without one): how
    long a server of the backplane may be silent before the others show its members leaving
    (docs/backplane.md)."""
    value = read_table(path, "backplane", LimitsError).get("node_timeout", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise LimitsError(f"{path}: [backplane] node_timeout must be a number of seconds > 0")
    return float(value)
