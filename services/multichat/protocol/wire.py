"""The JSON frame codec of multichat/1: one UTF-8 JSON object per line.

`encode` turns an event into a frame, `decode` turns one line (without its newline) back into
an event. Both are pure and stateless; which event is legal when is `state.py`'s business.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    AskName,
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
    Password,
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

# A frame carries one message of up to 4,000 characters; 4 UTF-8 bytes each plus the envelope
# still fits. IRC allows 512 bytes, but we carry JSON and pasted text.
MAX_FRAME = 16 * 1024
# Strings that are not message text (ids, tokens, reasons) stay short; nothing needs more.
MAX_FIELD_CHARS = 1024
# Integer ids must survive a JavaScript client: Number.MAX_SAFE_INTEGER is 2**53 - 1, and
# JSON-RPC clients number their requests within it.
MAX_INTEGER_ID = 2**53
# A ban or a mute lasts at most a year; longer is "until lifted" (no `seconds`).
MAX_SECONDS = 366 * 24 * 3600.0

# orjson writes what the standard library writes with these settings (compact, UTF-8) in a
# ninth of the time. What it refuses and the standard library takes (a lone surrogate, from a
# broken encoder, which sanitize.py strips; an integer past 64 bits; NaN) goes the old way, and
# what it reads otherwise than the standard library (see _parse) is read again, so what is
# accepted and how it is refused do not depend on which parser read it.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_loads = json.JSONDecoder().decode


# orjson reads an integer past 64 bits as a float where the standard library keeps it; every
# integer it reads exactly is below this.
_EXACT_BELOW = 2.0**63


def maybe_big_integer(value: object) -> bool:
    """Whether `value` is a float orjson may have read from an integer past 64 bits: whoever
    needs the integer reads the text again with the standard library."""
    return type(value) is float and abs(value) >= _EXACT_BELOW


def _parse(line: bytes) -> Any:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _loads(line.decode("utf-8"))
    # Every number the protocol reads is a frame's own field. (maybe_big_integer, inlined:
    # a call per field doubled the cost of parsing a line.)
    if type(obj) is dict:
        for value in obj.values():
            if type(value) is float and abs(value) >= _EXACT_BELOW:
                return _loads(line.decode("utf-8"))
    return obj


def _json(obj: object) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: the standard library raises what it always did
        return _dumps(obj).encode("utf-8")


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


def _invite_json(invite: Invite) -> dict[str, Any]:
    return {"id": invite.id, "name": invite.name, "uses": invite.uses, "expires": invite.expires}


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


def _room_json(room: RoomInfo) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": room.name, "members": room.members, "topic": room.topic}
    if room.names:
        obj["names"] = list(room.names)
    return obj


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
# The text of a message may be longer than the limit the room enforces, so the room can say
# "too long" instead of a frame error; the frame size still bounds it.
_DECODERS: dict[str, Callable[[dict[str, Any]], Event]] = {
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
    "say": lambda o: Say(_str(o, "text"), _id(o, "id"), _opt_str(o, "to"), _bool(o, "action")),
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
# Which JSON key carries a moderation command's target.
_TARGET_KEY = {"ban": "target", "unban": "target", "lock": "", "unlock": "", "bans": ""}


def decode(line: bytes) -> Event:
    """Parse one frame (without its newline) into an event, or raise RemoteProtocolError."""
    try:
        obj = _parse(line)
    except UnicodeDecodeError:
        raise RemoteProtocolError("frame is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise RemoteProtocolError("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError("frame has no 'type'")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise RemoteProtocolError(f"unknown frame type {kind[:40]!r}")
    return decoder(obj)


def to_json(event: Event) -> dict[str, Any]:
    """The JSON object of one event."""
    obj: dict[str, Any]
    match event:
        # First, and without positional captures (each costs a lookup through __match_args__:
        # together three times the rest of this case): every post is encoded on every server.
        case Message():
            obj = {
                "type": "message",
                "seq": event.seq,
                "ts": event.ts,
                "from": event.sender,
                "text": event.text,
            }
            if event.id is not None:
                obj["id"] = event.id
            if event.to is not None:
                obj["to"] = event.to
            if event.action:
                obj["action"] = True
            return obj
        case Hello(name, password, version, invite, since, room):
            obj = {"type": "hello", "version": version, "name": name, "password": password}
            if invite is not None:
                obj["invite"] = invite
            if since is not None:
                obj["since"] = since
            if room is not None:
                obj["room"] = room
            return obj
        case Control(token, command, reason, args):
            obj = {
                "type": "control",
                "token": token,
                "command": command,
                "reason": reason,
            }
            if args:
                obj["args"] = list(args)
            return obj
        case Say(text, id, to, action):
            obj = {"type": "say", "text": text}
            if id is not None:
                obj["id"] = id
            if to is not None:
                obj["to"] = to
            if action:
                obj["action"] = True
            return obj
        case Who():
            return {"type": "who"}
        case Quit(reason):
            return {"type": "quit", "reason": reason}
        case Ping(data):
            return {"type": "ping", "data": data}
        case Pong(data):
            return {"type": "pong", "data": data}
        case Welcome(name, room, members, version, topic, seq):
            obj = {
                "type": "welcome",
                "version": version,
                "name": name,
                "room": room,
                "members": list(members),
                "seq": seq,
            }
            if topic:
                obj["topic"] = topic
            return obj
        case Error(code, message, id):
            error: dict[str, Any] = {"type": "error", "code": code, "message": message}
            if id is not None:
                error["id"] = id
            return error
        case Join(name, ts):
            return {"type": "join", "name": name, "ts": ts}
        case Leave(name, reason, ts):
            return {"type": "leave", "name": name, "reason": reason, "ts": ts}
        case Members(names, away, ops):
            obj = {"type": "members", "names": list(names)}
            if away:
                obj["away"] = dict(away)
            if ops:
                obj["ops"] = list(ops)
            return obj
        case Status(room, members, uptime, version, rooms):
            obj = {
                "type": "status",
                "room": room,
                "members": list(members),
                "uptime": uptime,
                "version": version,
            }
            if rooms:
                obj["rooms"] = [_room_json(r) for r in rooms]
            return obj
        case ListRooms():
            return {"type": "rooms"}
        case RoomList(rooms):
            return {"type": "rooms", "rooms": [_room_json(r) for r in rooms]}
        case JoinRoom(room):
            return {"type": "join", "room": room}
        case Shutdown(reason):
            return {"type": "shutdown", "reason": reason}
        case Nick(name):
            return {"type": "nick", "name": name}
        case Renamed(old, new, ts):
            return {"type": "nick", "old": old, "new": new, "ts": ts}
        case Away(text):
            return {"type": "away", "text": text}
        case WentAway(name, text):
            return {"type": "away", "name": name, "text": text}
        case Back():
            return {"type": "back"}
        case CameBack(name):
            return {"type": "back", "name": name}
        case SetTopic(text):
            return {"type": "topic", "text": text}
        case Topic(text, by):
            return {"type": "topic", "text": text, "by": by}
        case Help():
            return {"type": "help"}
        case Notice(text, ts):
            return {"type": "notice", "text": text, "ts": ts}
        case Moderate(command, target, reason, seconds):
            obj = {"type": command}
            key = _TARGET_KEY.get(command, "name")
            if key:
                obj[key] = target
            if reason:
                obj["reason"] = reason
            if seconds is not None:
                obj["seconds"] = seconds
            return obj
        case Gap(missed):
            return {"type": "gap", "missed": missed}
        case InviteIssued(invite, token):
            return {"type": "invite", "token": token, **_invite_json(invite)}
        case InviteList(invites):
            return {"type": "invites", "invites": [_invite_json(i) for i in invites]}
        case BanList(bans):
            return {
                "type": "bans",
                "bans": [
                    {
                        "address": b.address,
                        "name": b.name,
                        "until": b.until,
                        "reason": b.reason,
                        "by": b.by,
                    }
                    for b in bans
                ],
            }
        case Password() | AskName():
            raise LocalProtocolError(f"{type(event).__name__} exists only in plain-text mode")
    raise LocalProtocolError(f"not an event: {event!r}")  # pragma: no cover


def encode(event: Event) -> bytes:
    """One frame, newline included."""
    # Joined, not orjson's OPT_APPEND_NEWLINE: orjson's own bytes object keeps a 4 KiB buffer
    # however short the frame, and the room's log holds thousands of frames.
    return _json(to_json(event)) + b"\n"


def add_id(frame: bytes, id: MessageId) -> bytes:
    """`frame` (an encoded message without an id) with `id` added: the sender's echo.

    Splicing saves encoding the whole message a second time for every post.
    """
    return frame[:-2] + b',"id":' + _json(id) + b"}\n"
