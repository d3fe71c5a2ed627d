"""A frame's fields as the protocol reads them, and the event each frame type becomes.

`DECODERS` maps a frame's `type` to the function that reads the rest of it: every field is
checked for its type and length here, so an event never holds what its annotation does not
allow. wire.py's `decode` parses the JSON and hands the object over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import RemoteProtocolError
from .events import (
    Away,
    Back,
    BanEntry,
    BanList,
    CameBack,
    Control,
    Error,
    Event,
    Gap,
    Hello,
    Help,
    Invite,
    InviteIssued,
    InviteList,
    Join,
    JoinRoom,
    Leave,
    ListRooms,
    Members,
    Message,
    MessageId,
    Moderate,
    Nick,
    Notice,
    Ping,
    Pong,
    Quit,
    Renamed,
    RoomInfo,
    RoomList,
    Say,
    SetTopic,
    Shutdown,
    Status,
    Topic,
    Welcome,
    WentAway,
    Who,
)

# Strings that are not message text (ids, tokens, reasons) stay short; nothing needs more.
MAX_FIELD_CHARS = 1024
# Integer ids must survive a JavaScript client: Number.MAX_SAFE_INTEGER is 2**53 - 1, and
# JSON-RPC clients number their requests within it.
MAX_INTEGER_ID = 2**53
# A ban or a mute lasts at most a year; longer is "until lifted" (no `seconds`).
MAX_SECONDS = 366 * 24 * 3600.0


def _str(obj: dict[str, Any], key: str, default: str | None = None, limit: int = 0) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        if value is None and key not in obj:
            raise RemoteProtocolError(f"frame is missing {key!r}")
        raise RemoteProtocolError(f"{key!r} must be a string")
    if limit and len(value) > limit:
        raise RemoteProtocolError(f"{key!r} is too long (at most {limit} characters)")
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise RemoteProtocolError(f"{key!r} must be a short string")
    return value


def _id(obj: dict[str, Any], key: str) -> MessageId | None:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and len(value) <= MAX_FIELD_CHARS):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INTEGER_ID:
        return value
    raise RemoteProtocolError(f"{key!r} must be a short string or an integer within +-2**53")


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RemoteProtocolError(f"{key!r} must be an integer")
    return value


def _num(obj: dict[str, Any], key: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RemoteProtocolError(f"{key!r} must be a number")
    return float(value)


def _names(obj: dict[str, Any], key: str, default: list[str] | None = None) -> tuple[str, ...]:
    value = obj.get(key, default)
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise RemoteProtocolError(f"{key!r} must be a list of names")
    return tuple(value)


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise RemoteProtocolError(f"{key!r} must be true or false")
    return value


def _seconds(obj: dict[str, Any]) -> float | None:
    if obj.get("seconds") is None:
        return None
    value = _num(obj, "seconds")
    if not 0 < value <= MAX_SECONDS:
        raise RemoteProtocolError("'seconds' must be more than 0 and at most a year")
    return value


def _away(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    value = obj.get("away", {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RemoteProtocolError("'away' must map names to texts")
    return tuple(value.items())


def _ban(value: object) -> BanEntry:
    if not isinstance(value, dict):
        raise RemoteProtocolError("a ban must be an object")
    until = value.get("until")
    if until is not None and not isinstance(until, int | float):
        raise RemoteProtocolError("'until' must be a number or null")
    return BanEntry(
        _str(value, "address"),
        _str(value, "name", ""),
        None if until is None else float(until),
        _str(value, "reason", ""),
        _str(value, "by", ""),
    )


def _bans(obj: dict[str, Any]) -> BanList:
    value = obj.get("bans")
    if not isinstance(value, list):
        raise RemoteProtocolError("'bans' must be a list")
    return BanList(tuple(_ban(b) for b in value))


def _since(obj: dict[str, Any]) -> int | None:
    if obj.get("since") is None:
        return None
    since = _int(obj, "since")
    if since < 0:
        raise RemoteProtocolError("'since' must be a seq: 0 or more")
    return since


def _invite(value: object) -> Invite:
    if not isinstance(value, dict):
        raise RemoteProtocolError("an invite must be an object")
    return Invite(
        _str(value, "id"), _str(value, "name", ""), _int(value, "uses"), _num(value, "expires")
    )


def _room(value: object) -> RoomInfo:
    if not isinstance(value, dict):
        raise RemoteProtocolError("a room must be an object")
    return RoomInfo(
        _str(value, "name"),
        _int(value, "members"),
        _str(value, "topic", ""),
        _names(value, "names", []),
    )


def _rooms(obj: dict[str, Any]) -> tuple[RoomInfo, ...]:
    return tuple(_room(r) for r in _list(obj, "rooms"))


def _list(obj: dict[str, Any], key: str) -> list[object]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise RemoteProtocolError(f"{key!r} must be a list")
    return value


def _moderate(command: str, key: str = "name") -> Callable[[dict[str, Any]], Event]:
    def decode(o: dict[str, Any]) -> Event:
        target = _str(o, key, limit=_F) if key else ""
        return Moderate(command, target, _str(o, "reason", "", _F), _seconds(o))

    return decode


# `nick`, `away`, `back` and `topic` name a client's request and the server's news alike: the
# server's always carries a field the request has not (`old`, `name`, `by`).
def _nick(o: dict[str, Any]) -> Event:
    if "old" in o:
        return Renamed(_str(o, "old"), _str(o, "new"), _num(o, "ts", 0.0))
    return Nick(_str(o, "name", limit=_F))


_F = MAX_FIELD_CHARS


def _say(o: dict[str, Any]) -> Say:
    # The frame members send most, read once for every line: its usual shape is checked here,
    # anything else by the general readers, which raise the errors (0.25 us a line less).
    text = o.get("text")
    if type(text) is not str:
        text = _str(o, "text")
    id = o.get("id")
    if id is not None and (type(id) is not str or len(id) > _F):
        id = _id(o, "id")
    to = o.get("to")
    if to is not None:
        to = _opt_str(o, "to")
    action = o.get("action", False)
    if action is not False:
        action = _bool(o, "action")
    return Say(text, id, to, action)


# The text of a message may be longer than the limit the room enforces, so the room can say
# "too long" instead of a frame error; the frame size still bounds it.
DECODERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "hello": lambda o: Hello(
        _str(o, "name", limit=_F),
        _str(o, "password", "" if "invite" in o else None, _F),
        _int(o, "version"),
        _opt_str(o, "invite"),
        _since(o),
        _opt_str(o, "room"),
    ),
    "control": lambda o: Control(
        _str(o, "token", limit=_F),
        _str(o, "command", limit=_F),
        _str(o, "reason", "", _F),
        _names(o, "args", []),
    ),
    "say": _say,
    "who": lambda o: Who(),
    "quit": lambda o: Quit(_str(o, "reason", "quit", _F)),
    "ping": lambda o: Ping(_str(o, "data", "", _F)),
    "pong": lambda o: Pong(_str(o, "data", "", _F)),
    "welcome": lambda o: Welcome(
        _str(o, "name"),
        _str(o, "room"),
        _names(o, "members"),
        _int(o, "version", 1),
        _str(o, "topic", ""),
        _int(o, "seq", 0),
    ),
    "error": lambda o: Error(_str(o, "code"), _str(o, "message", ""), _id(o, "id")),
    "message": lambda o: Message(
        _int(o, "seq"),
        _num(o, "ts"),
        _str(o, "from"),
        _str(o, "text"),
        _id(o, "id"),
        _opt_str(o, "to"),
        _bool(o, "action"),
    ),
    # A member's request names the room it goes to; the server's news names who came.
    "join": lambda o: (
        Join(_str(o, "name"), _num(o, "ts", 0.0))
        if "name" in o
        else JoinRoom(_str(o, "room", limit=_F))
    ),
    "leave": lambda o: Leave(
        _str(o, "name"), _str(o, "reason", "disconnected"), _num(o, "ts", 0.0)
    ),
    "members": lambda o: Members(_names(o, "names"), _away(o), _names(o, "ops", [])),
    "status": lambda o: Status(
        _str(o, "room"),
        _names(o, "members"),
        _num(o, "uptime"),
        _str(o, "version"),
        _rooms(o) if "rooms" in o else (),
    ),
    "shutdown": lambda o: Shutdown(_str(o, "reason", "")),
    "nick": _nick,
    "away": lambda o: (
        WentAway(_str(o, "name"), _str(o, "text", ""))
        if "name" in o
        else Away(_str(o, "text", "", _F))
    ),
    "back": lambda o: CameBack(_str(o, "name")) if "name" in o else Back(),
    "topic": lambda o: (
        Topic(_str(o, "text"), _str(o, "by")) if "by" in o else SetTopic(_str(o, "text", "", _F))
    ),
    "help": lambda o: Help(),
    "notice": lambda o: Notice(_str(o, "text"), _num(o, "ts", 0.0)),
    "bans": lambda o: _bans(o) if "bans" in o else Moderate("bans"),
    "gap": lambda o: Gap(_int(o, "missed")),
    "rooms": lambda o: RoomList(_rooms(o)) if "rooms" in o else ListRooms(),
    "invite": lambda o: InviteIssued(_invite(o), _str(o, "token")),
    "invites": lambda o: InviteList(tuple(_invite(i) for i in _list(o, "invites"))),
    "kick": _moderate("kick"),
    "ban": _moderate("ban", "target"),
    "unban": _moderate("unban", "target"),
    "mute": _moderate("mute"),
    "unmute": _moderate("unmute"),
    "op": _moderate("op"),
    "deop": _moderate("deop"),
    "lock": _moderate("lock", ""),
    "unlock": _moderate("unlock", ""),
}
