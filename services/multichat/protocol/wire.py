"""The JSON frame codec of multichat/1: one UTF-8 JSON object per line.

`encode` turns an event into a frame, `decode` turns one line (without its newline) back into
an event (each frame type's fields are read and checked in wire_fields.py). Both are pure and
stateless; which event is legal when is `state.py`'s business.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    AskName,
    Away,
    Back,
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
from .wire_fields import DECODERS
from .wire_fields import MAX_FIELD_CHARS as MAX_FIELD_CHARS

# A frame carries one message of up to 4,000 characters; 4 UTF-8 bytes each plus the envelope
# still fits. IRC allows 512 bytes, but we carry JSON and pasted text.
MAX_FRAME = 16 * 1024

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


def _invite_json(invite: Invite) -> dict[str, Any]:
    return {"id": invite.id, "name": invite.name, "uses": invite.uses, "expires": invite.expires}


def _room_json(room: RoomInfo) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": room.name, "members": room.members, "topic": room.topic}
    if room.names:
        obj["names"] = list(room.names)
    return obj


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
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise RemoteProtocolError(f"unknown frame type {kind[:40]!r}")
    return decoder(obj)


# Which JSON key carries a moderation command's target.
_TARGET_KEY = {"ban": "target", "unban": "target", "lock": "", "unlock": "", "bans": ""}


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
