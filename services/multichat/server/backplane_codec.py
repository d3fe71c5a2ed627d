"""The backplane's data model in Redis, and its codec: keys, stream IDs, entry fields. No I/O.

Every room is one Redis Stream (`NS:{room}:log`) whose entries are the room's log, in the one
order every server reads it. An entry's stream ID is its place: `SEQ-N`, where SEQ is the
room's `seq` as history_entries.py defines it (a message's own; anything else's, the newest
message's before it) and N is 0 for a message and counts the entries after it (1, 2, ...).
So IDs only grow, every entry has one, and a message's ID is `SEQ-0`: "everything after
message 41" is the range after `41-0`. The IDs are assigned in Redis by the Lua scripts of
backplane_scripts.py, never by a server.

Beside the stream, each room has a hash `NS:{room}:meta` (the numbering, `seq` and `sub`, and
the topic) and `NS:{room}:members` (name key -> who, on which server). The namespace holds
the names in use on every server (`NS:names`, name key -> the member's token), the servers
alive (`NS:nodes`, node id -> when Redis last heard from it), each server's members
(`NS:node:{id}:seats`, token -> room, key, name), the data epoch and the password digest.

A stream entry has one field, `d`: a JSON array of the entry's parts, in this order: type,
time, the origin server's node id, who, text, private recipient (or null), extra (an object
or null), the member's token on the origin server, the client's message id (a string, a
number or null: its type is kept) and the publish's number on its server. One field rather
than one per part, because every server reads every entry: with ten fields, Redis's reply
parsing and the client's field dictionaries were most of what reading the stream cost, and
one JSON array is read in C. A later version adds parts at the end; readers ignore them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

import orjson

from ..protocol.events import BanEntry, MessageId
from ..protocol.names import is_address, key_of
from ..protocol.wire import maybe_big_integer
from .history_entries import JOIN, LEAVE, MESSAGE, NICK, StoredEntry

# The prefix of every key, so one Redis can hold other data (or several backplanes) too.
NAMESPACE = "multichat"
# The one field of a stream entry, and how many parts its record has (see the docstring).
RECORD_FIELD = "d"
RECORD_PARTS = 10
# Entry types that change who is in the room: they go through join, leave and rename, which
# claim and release names in the same script, never through a plain publish.
PRESENCE_TYPES = frozenset({JOIN, LEAVE, NICK})


class CorruptEntry(ValueError):
    """A stream entry, or a record beside it, that this version cannot read."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis keys of one backplane. A room is named by its key (protocol.names.room_key);
    it is percent-encoded in key names, so `{`, `}` and `:` in a room's name stay inside it."""

    namespace: str = NAMESPACE

    @property
    def names(self) -> str:
        return f"{self.namespace}:names"

    @property
    def nodes(self) -> str:
        return f"{self.namespace}:nodes"

    @property
    def epoch(self) -> str:
        return f"{self.namespace}:epoch"

    @property
    def password(self) -> str:
        return f"{self.namespace}:password"

    def seats(self, node: str) -> str:
        return f"{self.namespace}:node:{{{quote(node, safe='')}}}:seats"

    def log(self, room: str) -> str:
        return f"{self.namespace}:{{{quote(room, safe='')}}}:log"

    def meta(self, room: str) -> str:
        return f"{self.namespace}:{{{quote(room, safe='')}}}:meta"

    def members(self, room: str) -> str:
        return f"{self.namespace}:{{{quote(room, safe='')}}}:members"

    def posted(self, room: str, token: str) -> str:
        """The client message ids a member's seat posted lately (a sorted set, by seq)."""
        return f"{self.namespace}:{{{quote(room, safe='')}}}:posted:{quote(token, safe='')}"


# -- stream IDs --


def stream_id(seq: int, sub: int) -> str:
    """The stream ID of the entry `sub` after message `seq` (`sub` 0: the message itself)."""
    return f"{seq}-{sub}"


def parse_id(text: str) -> tuple[int, int]:
    """(seq, sub) of a stream ID; raises CorruptEntry for anything else."""
    # Not a regular expression: every server parses every entry's ID (0.9 µs against 1.5).
    seq, _, sub = text.partition("-")
    # (isdigit takes other scripts' digits too: isascii keeps them out)
    if (
        0 < len(seq) <= 19
        and 0 < len(sub) <= 19
        and seq.isdigit()
        and sub.isdigit()
        and text.isascii()
    ):
        return int(seq), int(sub)
    raise CorruptEntry(f"not a stream ID: {text!r}")


# -- entries --


class Origin(NamedTuple):
    """Where an entry was published: the server, and the member whose it is there.

    Named tuples, this and BackplaneEntry, not frozen dataclasses: every server makes both
    for every entry of the stream, and a frozen dataclass took 1.1 to 1.3 µs to make against
    0.3 µs for the tuple on the test machine.
    """

    node: str  # the publishing server's node id
    member: str = ""  # the member's token on that server ("" for the server's own notices)
    id: MessageId | None = None  # the client's message id, for the sender's echo
    ref: int = 0  # the publish's number on its server (BackplaneUnavailable.ref)


class BackplaneEntry(NamedTuple):
    """One entry of a room's stream, as every server reads it."""

    id: str  # its stream ID, "SEQ-N"
    entry: StoredEntry  # its seq is the ID's
    origin: Origin

    @property
    def is_message(self) -> bool:
        return self.entry.type == MESSAGE


def encode_fields(entry: StoredEntry, origin: Origin) -> list[str]:
    """The stream fields of `entry` from `origin`, as flat name, value pairs (its seq is not
    among them: the stream ID carries it)."""
    if not math.isfinite(entry.ts):
        raise ValueError(f"an entry's time must be finite, not {entry.ts!r}")
    record = [
        entry.type,
        entry.ts,
        origin.node,
        entry.sender,
        entry.text,
        entry.recipient,
        entry.extra or None,
        origin.member,
        origin.id,
        origin.ref,
    ]
    return [RECORD_FIELD, pack(record)]


_std_pack = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def pack(value: object) -> str:
    """`value` as compact JSON. orjson, as wire.py: every server decodes and every publisher
    encodes every entry, and the writer every batch."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:  # what orjson will not write: the standard library says why
        return _std_pack(value)


def _unpack(raw: str) -> object:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
    # orjson reads an integer past 64 bits as a float, where the standard library (which
    # `pack` falls back on to write one) keeps it exact: such a record is read again.
    if type(record) is list and _maybe_inexact(record):
        return json.loads(raw)
    return record


def _maybe_inexact(record: list[object]) -> bool:
    """Whether orjson may have read an integer of `record` as a float. Looked at where one can
    be: the time, the client's id and the publish number, and the extra data (None for
    nearly every entry, so this costs a message three type checks)."""
    if len(record) < RECORD_PARTS:
        return False
    extra = record[6]
    return (
        maybe_big_integer(record[1])
        or type(record[8]) is float
        or type(record[9]) is float
        or (extra is not None and _has_big_float(extra))
    )


def _has_big_float(value: object) -> bool:
    if type(value) is float:
        return maybe_big_integer(value)
    if type(value) is dict:
        return any(_has_big_float(item) for item in value.values())
    if type(value) is list:
        return any(_has_big_float(item) for item in value)
    return False


def decode_entry(id: str, fields: Mapping[str, object]) -> BackplaneEntry:
    """The entry a stream holds at `id`; raises CorruptEntry if it is not one. Fields, and
    parts at the end of the record, that this version does not know are ignored."""
    return decode_record(id, fields.get(RECORD_FIELD))


def decode_record(id: str, raw: object) -> BackplaneEntry:
    """The entry a stream holds at `id` whose record (the `d` field) is `raw`; raises
    CorruptEntry."""
    seq, _ = parse_id(id)
    if not isinstance(raw, str):
        raise CorruptEntry(f"entry {id} has no {RECORD_FIELD!r} field")
    try:
        record = _unpack(raw)
    except (ValueError, RecursionError):
        raise CorruptEntry(f"entry {id} is not a JSON record") from None
    if type(record) is not list or len(record) < RECORD_PARTS:
        raise CorruptEntry(f"entry {id} is not a record of {RECORD_PARTS} parts")
    if len(record) > RECORD_PARTS:  # a later version's parts: ignored
        record = record[:RECORD_PARTS]
    kind, ts, node, sender, text, recipient, extra, member, client_id, ref = record
    if not (
        type(kind) is str
        and type(node) is str
        and type(sender) is str
        and type(text) is str
        and type(member) is str
        and (recipient is None or type(recipient) is str)
    ):
        raise CorruptEntry(f"entry {id} has a name or text that is not a string")
    if type(ts) not in (float, int) or not math.isfinite(ts):
        raise CorruptEntry(f"entry {id} has a bad time {ts!r}")
    if extra is not None and type(extra) is not dict:
        raise CorruptEntry(f"entry {id} has extra data that is not an object")
    if client_id is not None and type(client_id) not in (str, int):
        raise CorruptEntry(f"entry {id} has a message id that is neither a string nor a number")
    if type(ref) is not int or ref < 0:
        raise CorruptEntry(f"entry {id} has a bad publish number {ref!r}")
    entry = StoredEntry(seq, float(ts), kind, sender, text, recipient, extra or None)
    return BackplaneEntry(id, entry, Origin(node, member, client_id, ref))


# -- the room's moderation state --

# The meta hash's fields for it: `locked` ("1" or "0"), one `ban:ADDRESS` per ban, and one
# `mute:KEY` per mute (by the member's name key, as one server keeps mutes).
LOCKED_FIELD = "locked"
BAN_PREFIX = "ban:"
MUTE_PREFIX = "mute:"


def moderation_change(entry: StoredEntry) -> str:
    """What a `moderate` entry changes in the room's meta hash, for the APPLY script (JSON:
    ["ban", address, record], ["unban", address], ["mute", key, record], ["unmute", key],
    ["lock"], ["unlock"]), or "" for nothing: a command on a member is carried out by its
    server, and a ban by name is handed on again by address (moderation.py)."""
    command = entry.text
    extra = entry.extra or {}
    target = extra.get("target")
    seconds = extra.get("seconds")
    until = entry.ts + seconds if isinstance(seconds, int | float) else None
    if command in ("lock", "unlock"):
        return json.dumps([command])
    if not isinstance(target, str):
        return ""
    if command in ("mute", "unmute"):
        key = key_of(target)
        if key is None:
            return ""
        if command == "unmute":
            return json.dumps(["unmute", key], ensure_ascii=False)
        return json.dumps(["mute", key, json.dumps({"until": until})], ensure_ascii=False)
    if command not in ("ban", "unban") or not is_address(target):
        return ""
    if command == "unban":
        return json.dumps(["unban", target])
    record = {
        "until": until,
        "reason": extra.get("reason") or "",
        "by": entry.sender,
        "name": extra.get("name") or "",
    }
    return json.dumps(["ban", target, json.dumps(record, ensure_ascii=False)], ensure_ascii=False)


def decode_mute(key: str, value: str) -> float | None:
    """Until when (wall-clock time; None: until lifted) a mute as the meta hash keeps it
    holds; raises CorruptEntry."""
    try:
        record = json.loads(value)
    except ValueError:
        raise CorruptEntry(f"the mute of {key} is damaged") from None
    until = record.get("until") if isinstance(record, dict) else math.nan
    if not (until is None or (type(until) in (int, float) and math.isfinite(until))):
        raise CorruptEntry(f"the mute of {key} is damaged")
    return None if until is None else float(until)


def decode_ban(address: str, value: str) -> BanEntry:
    """A ban as the meta hash keeps it; raises CorruptEntry."""
    try:
        record = json.loads(value)
    except ValueError:
        raise CorruptEntry(f"the ban on {address} is damaged") from None
    if not isinstance(record, dict):
        raise CorruptEntry(f"the ban on {address} is damaged")
    until, reason, by = record.get("until"), record.get("reason"), record.get("by")
    name = record.get("name", "")  # (not kept by earlier versions)
    if not (until is None or (type(until) in (int, float) and math.isfinite(until))):
        raise CorruptEntry(f"the ban on {address} has a bad time")
    if not isinstance(reason, str) or not isinstance(by, str) or not isinstance(name, str):
        raise CorruptEntry(f"the ban on {address} is damaged")
    return BanEntry(address, name, None if until is None else float(until), reason, by)


# -- who is where --


@dataclass(frozen=True, slots=True)
class Seat:
    """A member of a room as the backplane knows it: its name's key is claimed for it on every
    server, and `token` (random, never reused) tells its entries apart from anyone else's."""

    room: str  # the room's key
    key: str  # its name's key (protocol.names.name_key)
    name: str  # its name as shown
    token: str


@dataclass(frozen=True, slots=True)
class RemoteMember:
    """A member of a room on any server, as `NS:{room}:members` lists it."""

    name: str
    key: str
    node: str
    token: str
    since: str  # the stream ID of its join: members are listed in the order they joined


def encode_seat(seat: Seat) -> str:
    """A seat's record in its server's `seats` hash (the Lua scripts write the same shape)."""
    return json.dumps({"room": seat.room, "key": seat.key, "name": seat.name})


def decode_seat(token: str, value: str) -> Seat:
    record = _record(value, ("room", "key", "name"), "seat")
    return Seat(record["room"], record["key"], record["name"], token)


def decode_member(key: str, value: str) -> RemoteMember:
    record = _record(value, ("name", "node", "token", "since"), "member")
    return RemoteMember(record["name"], key, record["node"], record["token"], record["since"])


def member_order(member: RemoteMember) -> tuple[int, int]:
    """Sort key: the order members joined in (their join entries' IDs)."""
    try:
        return parse_id(member.since)
    except CorruptEntry:
        return (0, 0)


def decode_topic(value: str | None) -> tuple[str, str]:
    """(text, by) of a room's topic as its meta hash keeps it; ("", "") for none."""
    if not value:
        return "", ""
    try:
        text, by = json.loads(value)
    except (ValueError, TypeError):
        raise CorruptEntry("the room's topic record is damaged") from None
    if not isinstance(text, str) or not isinstance(by, str):
        raise CorruptEntry("the room's topic record is damaged")
    return text, by


def encode_topic(text: str, by: str) -> str:
    return json.dumps([text, by], ensure_ascii=False)


def _record(value: str, names: tuple[str, ...], what: str) -> dict[str, str]:
    try:
        record = json.loads(value)
    except ValueError:
        raise CorruptEntry(f"a {what} record is damaged: {value!r}") from None
    # cjson writes an empty Lua table as {} and a string as a string; anything else is damage.
    if not isinstance(record, dict) or not all(isinstance(record.get(n), str) for n in names):
        raise CorruptEntry(f"a {what} record is damaged: {value!r}")
    return record
