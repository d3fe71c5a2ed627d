"""The multichat/1 state machine: every state and transition lives here, and only here.

One conversation has one state, moved by the events either side sends. A connection object
(`protocol.py`) asks `next_state` before it lets an event through, in either direction.
"""

from __future__ import annotations

import enum

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
    InviteIssued,
    InviteList,
    Join,
    JoinRoom,
    Leave,
    ListRooms,
    Members,
    Message,
    Moderate,
    Nick,
    Notice,
    Password,
    Ping,
    Pong,
    Quit,
    Renamed,
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


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"

    # Every frame looks up its transition by (role, state, type): Enum's own hash is a Python
    # call, and each lookup made two of them (0.5 us a frame against 0.25; an enum's members
    # are singletons compared by identity, so hashing by identity is equally right).
    __hash__ = object.__hash__


class Mode(enum.Enum):
    """How a server connection talks: not decided yet, JSON frames, or plain text lines."""

    UNKNOWN = "unknown"
    JSON = "json"
    TEXT = "text"


class State(enum.Enum):
    GREETING = "greeting"  # the client must speak first: hello, control (or text password)
    ANSWERING = "answering"  # the server owes an answer to the greeting
    JOINED = "joined"  # a member of the room
    LEAVING = "leaving"  # the client said quit; the server may still deliver what was queued
    CLOSED = "closed"  # nothing more may be sent

    __hash__ = object.__hash__  # (as Role's)


C, S = Role.CLIENT, Role.SERVER
G, A, J, L, X = State.GREETING, State.ANSWERING, State.JOINED, State.LEAVING, State.CLOSED
_TEXT_MODE = Mode.TEXT  # (read for every frame: see connection.py on enum lookups)

_TRANSITIONS: dict[tuple[Role, State, type[Event]], State] = {
    (C, G, Hello): A,
    (C, G, Control): A,
    (S, G, Error): X,  # a deadline passed, or the server refuses before any greeting
    (S, G, Shutdown): X,
    (S, A, Welcome): J,
    (S, A, Error): X,
    (S, A, Status): X,
    (S, A, Notice): X,  # the answer to a host's moderation command
    (S, A, BanList): X,
    (S, A, InviteIssued): X,  # the answers to the host's invite commands
    (S, A, InviteList): X,
    (S, A, Shutdown): X,
    (C, J, Say): J,
    (C, J, Who): J,
    (C, J, Ping): J,
    (C, J, Pong): J,
    (C, J, Quit): L,
    **{
        (C, J, request): J
        for request in (Nick, Away, Back, SetTopic, Help, Moderate, ListRooms, JoinRoom)
    },
    (S, J, Message): J,
    (S, J, Join): J,
    (S, J, Leave): J,
    (S, J, Members): J,
    (S, J, Ping): J,
    (S, J, Pong): J,
    (S, J, Error): J,  # a bad frame is answered and the session goes on
    (S, J, Shutdown): X,
    # A member that moved to another room (`join`) is welcomed there: it is still joined.
    (S, J, Welcome): J,
    **{
        (S, J, news): J
        for news in (Renamed, WentAway, CameBack, Topic, Notice, BanList, Gap, RoomList)
    },
    # After `quit` the server still sends what it had queued (echoes of the last lines), then
    # closes; the client sends nothing more.
    (S, L, Message): L,
    (S, L, Join): L,
    (S, L, Leave): L,
    (S, L, Members): L,
    (S, L, Ping): L,
    (S, L, Pong): L,
    (S, L, Error): L,
    (S, L, Shutdown): X,
    (S, L, Welcome): L,  # a move asked for before the quit
    **{(S, L, news): L for news in (Renamed, WentAway, CameBack, Topic, Notice, BanList, RoomList)},
}

# Plain-text mode asks for the password first, then the name, and asks again for a name that
# is taken or invalid; a JSON client sends both at once and gets one answer.
_TEXT_TRANSITIONS: dict[tuple[Role, State, type[Event]], State] = {
    (C, G, Password): A,
    (C, G, Quit): X,  # `tata` at the name prompt
    (S, A, AskName): G,
}
RETRY_CODES = frozenset({"name_taken", "bad_name"})


def next_state(mode: Mode, sender: Role, state: State, event: Event, *, us: Role) -> State:
    """The state after `sender` sends `event`.

    An illegal event raises LocalProtocolError when `us` sent it, RemoteProtocolError otherwise.
    """
    key = (sender, state, type(event))
    new = _TRANSITIONS.get(key)
    if mode is _TEXT_MODE:
        if isinstance(event, Error) and state is A and event.code in RETRY_CODES:
            return G
        new = _TEXT_TRANSITIONS.get(key, new)
    if new is None:
        error = LocalProtocolError if sender is us else RemoteProtocolError
        message = f"{type(event).__name__.lower()} is not allowed now ({state.value})"
        raise error(message, "bad_frame")
    return new


def legal(mode: Mode, sender: Role, state: State, event: Event) -> bool:
    """Whether `sender` may send `event` now."""
    try:
        next_state(mode, sender, state, event, us=sender)
    except (LocalProtocolError, RemoteProtocolError):
        return False
    return True
