"""The JSON frame codec of multichat/1: one UTF-8 JSON object per line.

`encode` turns an event into a frame, `decode` turns one line (without its newline) back into
an event. Both are pure and stateless; which event is legal when is `state.py`'s business.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    AskName,
    Control,
    Error,
    Event,
    Hello,
    Join,
    Leave,
    Members,
    Message,
    MessageId,
    Password,
    Ping,
    Pong,
    Quit,
    Say,
    Shutdown,
    Status,
    Welcome,
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

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_loads = json.JSONDecoder().decode


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


def _names(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise RemoteProtocolError(f"{key!r} must be a list of names")
    return tuple(value)


_F = MAX_FIELD_CHARS
# The text of a message may be longer than the limit the room enforces, so the room can say
# "too long" instead of a frame error; the frame size still bounds it.
_DECODERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "hello": lambda o: Hello(
        _str(o, "name", limit=_F), _str(o, "password", limit=_F), _int(o, "version")
    ),
    "control": lambda o: Control(
        _str(o, "token", limit=_F), _str(o, "command", limit=_F), _str(o, "reason", "", _F)
    ),
    "say": lambda o: Say(_str(o, "text"), _id(o, "id")),
    "who": lambda o: Who(),
    "quit": lambda o: Quit(_str(o, "reason", "quit", _F)),
    "ping": lambda o: Ping(_str(o, "data", "", _F)),
    "pong": lambda o: Pong(_str(o, "data", "", _F)),
    "welcome": lambda o: Welcome(
        _str(o, "name"), _str(o, "room"), _names(o, "members"), _int(o, "version", 1)
    ),
    "error": lambda o: Error(_str(o, "code"), _str(o, "message", "")),
    "message": lambda o: Message(
        _int(o, "seq"), _num(o, "ts"), _str(o, "from"), _str(o, "text"), _id(o, "id")
    ),
    "join": lambda o: Join(_str(o, "name"), _num(o, "ts", 0.0)),
    "leave": lambda o: Leave(
        _str(o, "name"), _str(o, "reason", "disconnected"), _num(o, "ts", 0.0)
    ),
    "members": lambda o: Members(_names(o, "names")),
    "status": lambda o: Status(
        _str(o, "room"), _names(o, "members"), _num(o, "uptime"), _str(o, "version")
    ),
    "shutdown": lambda o: Shutdown(_str(o, "reason", "")),
}


def decode(line: bytes) -> Event:
    """Parse one frame (without its newline) into an event, or raise RemoteProtocolError."""
    try:
        obj = _loads(line.decode("utf-8"))
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
    match event:
        case Hello(name, password, version):
            return {"type": "hello", "version": version, "name": name, "password": password}
        case Control(token, command, reason):
            return {"type": "control", "token": token, "command": command, "reason": reason}
        case Say(text, id):
            return (
                {"type": "say", "text": text}
                if id is None
                else {"type": "say", "text": text, "id": id}
            )
        case Who():
            return {"type": "who"}
        case Quit(reason):
            return {"type": "quit", "reason": reason}
        case Ping(data):
            return {"type": "ping", "data": data}
        case Pong(data):
            return {"type": "pong", "data": data}
        case Welcome(name, room, members, version):
            return {
                "type": "welcome",
                "version": version,
                "name": name,
                "room": room,
                "members": list(members),
            }
        case Error(code, message):
            return {"type": "error", "code": code, "message": message}
        case Message(seq, ts, sender, text, id):
            obj = {"type": "message", "seq": seq, "ts": ts, "from": sender, "text": text}
            if id is not None:
                obj["id"] = id
            return obj
        case Join(name, ts):
            return {"type": "join", "name": name, "ts": ts}
        case Leave(name, reason, ts):
            return {"type": "leave", "name": name, "reason": reason, "ts": ts}
        case Members(names):
            return {"type": "members", "names": list(names)}
        case Status(room, members, uptime, version):
            return {
                "type": "status",
                "room": room,
                "members": list(members),
                "uptime": uptime,
                "version": version,
            }
        case Shutdown(reason):
            return {"type": "shutdown", "reason": reason}
        case Password() | AskName():
            raise LocalProtocolError(f"{type(event).__name__} exists only in plain-text mode")
    raise LocalProtocolError(f"not an event: {event!r}")  # pragma: no cover


def encode(event: Event) -> bytes:
    """One frame, newline included."""
    return (_dumps(to_json(event)) + "\n").encode("utf-8")


def add_id(frame: bytes, id: MessageId) -> bytes:
    """`frame` (an encoded message without an id) with `id` added: the sender's echo.

    Splicing saves encoding the whole message a second time for every post.
    """
    return frame[:-2] + b',"id":' + _dumps(id).encode("utf-8") + b"}\n"
