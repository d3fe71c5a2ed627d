"""The events of multichat/1: what a client and a server say to each other.

Every event is a frozen dataclass; `wire.py` turns them into frames and back, `state.py` says
which may be sent when. Field names match the JSON keys, except `Message.sender` (`"from"`).
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 1
# A message id as the client chose it: a string, or an integer for clients used to JSON-RPC.
MessageId = str | int
# The room's port when an address names none: part of the protocol, as 6667 is IRC's.
DEFAULT_PORT = 5002


@dataclass(frozen=True, slots=True)
class Hello:
    """A client asks to join a room as `name`, with the password or a personal invite."""

    name: str
    password: str
    version: int = PROTOCOL_VERSION
    invite: str | None = None  # a token from `multichat invite`, instead of the password
    since: int | None = None  # resume: send me every message after this `seq` first
    room: str | None = None  # which room; None: the server's default room


@dataclass(frozen=True, slots=True)
class Password:
    """Plain-text mode only: the password line, asked for before the name."""

    password: str


@dataclass(frozen=True, slots=True)
class Control:
    """A host's command proven by the running room's control token: `status`, `shutdown`, or a
    moderation command (`kick`, `ban`, ...) with its words in `args`."""

    token: str
    command: str
    reason: str = ""
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Say:
    """A member asks to post `text`; `id` comes back on the sender's echo as its acknowledgement.

    `id` is echoed exactly as sent, a string stays a string and an integer an integer.
    """

    text: str
    id: MessageId | None = None
    to: str | None = None  # a private message, for this member alone
    action: bool = False  # `/me waves`: shown as "* alice waves"


@dataclass(frozen=True, slots=True)
class Who:
    """A member asks for the member list; the answer is `Members`."""


@dataclass(frozen=True, slots=True)
class Quit:
    """A member leaves on purpose."""

    reason: str = "quit"


@dataclass(frozen=True, slots=True)
class Ping:
    """Either side checks the other is alive; the answer is `Pong` with the same `data`."""

    data: str = ""


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to `Ping`."""

    data: str = ""


@dataclass(frozen=True, slots=True)
class AskName:
    """Plain-text mode only: the password was right, now the name."""


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server accepted the hello: `name` is the member's name as the room shows it."""

    name: str
    room: str
    members: tuple[str, ...]
    version: int = PROTOCOL_VERSION
    topic: str = ""
    seq: int = 0  # the room's newest message number, for resuming later


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong; `code` is stable, `message` is for people; `id` is the refused
    `say`'s, when the error refuses one that carried an id."""

    code: str
    message: str
    id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A post, in room order (`seq`); `id` is set only on the sender's own echo."""

    seq: int
    ts: float
    sender: str
    text: str
    id: MessageId | None = None
    to: str | None = None  # private: only `sender` and `to` receive it
    action: bool = False


@dataclass(frozen=True, slots=True)
class Gap:
    """Resuming: `missed` messages since the asked-for `seq` are left out; the newest follow."""

    missed: int


@dataclass(frozen=True, slots=True)
class Join:
    """`name` joined the room."""

    name: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class Leave:
    """`name` left the room; `reason` is `quit`, `disconnected`, `kicked`, `timeout`, ..."""

    name: str
    reason: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class Members:
    """The member list, the answer to `Who`: who is away (and why), who is an operator."""

    names: tuple[str, ...]
    away: tuple[tuple[str, str], ...] = ()
    ops: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One room of the server: its name, how many are in it, its topic; `names` says who, in
    the host's `status` only (a member asking `rooms` is told how many, not who)."""

    name: str
    members: int
    topic: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Status:
    """The answer to `Control(command="status")`: the default room's name, every member of the
    server, and each room (the default one first)."""

    room: str
    members: tuple[str, ...]
    uptime: float
    version: str
    rooms: tuple[RoomInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The room is closing; the server closes the connection after this."""

    reason: str


# -- the server's rooms (docs/protocol.md, "Rooms") --


@dataclass(frozen=True, slots=True)
class ListRooms:
    """A member asks which rooms the server has; the answer is `RoomList`."""


@dataclass(frozen=True, slots=True)
class RoomList:
    """The server's rooms, the default one first."""

    rooms: tuple[RoomInfo, ...]


@dataclass(frozen=True, slots=True)
class JoinRoom:
    """A member asks to move to the room `room`: it leaves its room and gets the other's
    `Welcome` (and recent history), or an `Error` and stays where it is."""

    room: str


# -- what members do beyond talking (docs/protocol.md, "Chat commands" and "Moderation") --


@dataclass(frozen=True, slots=True)
class Nick:
    """A member asks to be called `name` from now on."""

    name: str


@dataclass(frozen=True, slots=True)
class Renamed:
    """`old` is now called `new`."""

    old: str
    new: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class Away:
    """A member is away, saying why (`text` may be empty)."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Back:
    """A member is back."""


@dataclass(frozen=True, slots=True)
class WentAway:
    """`name` is away; also the automatic answer to a private message sent to them."""

    name: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class CameBack:
    """`name` is back."""

    name: str


@dataclass(frozen=True, slots=True)
class SetTopic:
    """An operator sets the room's topic."""

    text: str


@dataclass(frozen=True, slots=True)
class Topic:
    """The room's topic is now `text`, set by `by`."""

    text: str
    by: str


@dataclass(frozen=True, slots=True)
class Help:
    """A member asks which commands there are; the answer is a `Notice`."""


@dataclass(frozen=True, slots=True)
class Moderate:
    """An operator's command: `kick`, `ban`, `unban`, `mute`, `unmute`, `lock`, `unlock`, `op`,
    `deop` or `bans`. `target` is a name (or, for `ban` and `unban`, an address); `seconds`
    bounds a ban or a mute (None: until the room closes or it is lifted)."""

    command: str
    target: str = ""
    reason: str = ""
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something happened that is not a message: a moderation action, or a command's answer."""

    text: str
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class BanEntry:
    """One ban: an address (and the name it was banned by), until when, why, by whom."""

    address: str
    name: str
    until: float | None
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class BanList:
    """The answer to `Moderate("bans")`."""

    bans: tuple[BanEntry, ...]


@dataclass(frozen=True, slots=True)
class Invite:
    """One personal invite as the host sees it (the token itself is never shown again)."""

    id: str
    name: str  # "" for anyone; else it works only for this name, which it reserves
    uses: int  # uses left
    expires: float  # time.time() after which it no longer works


@dataclass(frozen=True, slots=True)
class InviteIssued:
    """The answer to the host's `invite`: the new invite and, this once, its token."""

    invite: Invite
    token: str


@dataclass(frozen=True, slots=True)
class InviteList:
    """The answer to the host's `invites`."""

    invites: tuple[Invite, ...]


ClientEvent = (
    Hello
    | Password
    | Control
    | Say
    | Who
    | Quit
    | Ping
    | Pong
    | Nick
    | Away
    | Back
    | SetTopic
    | Help
    | Moderate
    | ListRooms
    | JoinRoom
)
ServerEvent = (
    AskName
    | Welcome
    | Error
    | Message
    | Join
    | Leave
    | Members
    | Status
    | Shutdown
    | Ping
    | Pong
    | Renamed
    | WentAway
    | CameBack
    | Topic
    | Notice
    | BanList
    | InviteIssued
    | InviteList
    | Gap
    | RoomList
)
Event = ClientEvent | ServerEvent


class NeedData:
    """Sentinel from `next_event()`: nothing complete yet, feed more bytes."""

    def __repr__(self) -> str:
        return "NEED_DATA"


class ConnectionClosed:
    """Sentinel from `next_event()`: the peer closed the connection."""

    def __repr__(self) -> str:
        return "CONNECTION_CLOSED"


NEED_DATA = NeedData()
CONNECTION_CLOSED = ConnectionClosed()
