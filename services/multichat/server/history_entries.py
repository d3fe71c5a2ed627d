"""One entry of the room's history as it is kept: what a log event becomes on disk, and back.

Each carries the room's `seq` as the room's log does: a message its own (unique, growing across
restarts), anything else the seq of the newest message before it. A private entry (`recipient`
set) is shown to its two parties only, matched by name key as the room matches members.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..protocol.events import CameBack, Join, Leave, Message, Notice, Renamed, Topic, WentAway
from ..protocol.names import name_key

# The kinds of entry, as the `type` column and `export --format json` name them.
MESSAGE = "message"  # `sender` said `text` (to `recipient` alone, if set); extra: action
JOIN = "join"
LEAVE = "leave"  # `text`: why
NICK = "nick"  # `sender` is now called `text`
TOPIC = "topic"  # `sender` set the topic to `text`
NOTICE = "notice"  # moderation and other notices; `text` says it all
AWAY = "away"  # `sender` is away, saying `text`
BACK = "back"
# With a backplane only: `sender` typed the moderation command `text` (extra: target, reason,
# seconds), for the servers of the members it names to carry out. Nothing a member is shown.
MODERATE = "moderate"

# What the room's log holds that history keeps.
HistoryEvent = Message | Join | Leave | Renamed | Topic | Notice | WentAway | CameBack


class StoredEntry(NamedTuple):
    """One entry of the room's history as the store keeps it.

    A named tuple, not a frozen dataclass: the room makes one for every message it stores, and
    `from_event` took 2.1 µs with the dataclass against 1.2 with the tuple on the test machine.
    """

    seq: int  # a message's own; anything else's, the newest message's before it
    ts: float
    type: str  # MESSAGE, JOIN, LEAVE, ...
    sender: str  # who posted, joined or left
    text: str = ""  # a message's text, a leave's reason
    recipient: str | None = None  # set for a private message: its other party
    extra: dict[str, Any] | None = None  # anything else a later entry type needs, as JSON

    @property
    def private(self) -> bool:
        return self.recipient is not None

    def visible_to(self, name: str | None) -> bool:
        """Whether the member called `name` may see this entry (None: nobody in particular)."""
        if self.recipient is None:
            return True
        if name is None:
            return False
        return name_key(name) in (name_key(self.sender), name_key(self.recipient))

    @classmethod
    def from_event(
        cls, event: HistoryEvent, *, seq: int | None = None, ts: float | None = None
    ) -> StoredEntry:
        """The entry for a room event. `seq` defaults to a message's own (other events carry
        none: pass the room's log entry's); `ts` is for the events with no time of their own
        (topic, away, back), and ignored for the others. Another event is a TypeError."""
        match event:
            case Message():
                return cls.of_message(event, event.seq if seq is None else seq)
            case Join():
                return cls(_seq(seq), _ts(event.ts, ts), JOIN, event.name)
            case Leave():
                return cls(_seq(seq), _ts(event.ts, ts), LEAVE, event.name, event.reason)
            case Renamed():
                return cls(_seq(seq), _ts(event.ts, ts), NICK, event.old, event.new)
            case Topic():
                return cls(_seq(seq), _ts(None, ts), TOPIC, event.by, event.text)
            case Notice():
                return cls(_seq(seq), _ts(event.ts, ts), NOTICE, "", event.text)
            case WentAway():
                return cls(_seq(seq), _ts(None, ts), AWAY, event.name, event.text)
            case CameBack():
                return cls(_seq(seq), _ts(None, ts), BACK, event.name)
            case _:
                raise TypeError(f"history does not keep {type(event).__name__} events")

    @classmethod
    def of_message(cls, message: Message, seq: int) -> StoredEntry:
        """The entry for `message`, numbered `seq`: `from_event`'s commonest case, on its own
        because the room makes one for every message (0.7 µs against 1.4 on the test VM)."""
        extra = {"action": True} if message.action else None
        return cls(seq, message.ts, MESSAGE, message.sender, message.text, message.to, extra)

    def to_event(self) -> HistoryEvent | None:
        """The room event this entry replays as (None for a type this version does not know).

        A replayed message has `seq` and `ts` as stored; the other events have no seq.
        """
        kind, sender, text = self.type, self.sender, self.text
        if kind == MESSAGE:
            action = bool(self.extra and self.extra.get("action"))
            # (positional: keywords cost a dataclass's __init__ a third more, once a post)
            return Message(self.seq, self.ts, sender, text, None, self.recipient, action)
        if kind == JOIN:
            return Join(sender, self.ts)
        if kind == LEAVE:
            return Leave(sender, text, self.ts)
        if kind == NICK:
            return Renamed(sender, text, self.ts)
        if kind == TOPIC:
            return Topic(text, sender)
        if kind == NOTICE:
            return Notice(text, self.ts)
        if kind == AWAY:
            return WentAway(sender, text)
        if kind == BACK:
            return CameBack(sender)
        return None


def _seq(seq: int | None) -> int:
    if seq is None:
        raise ValueError("only a message has a seq of its own: pass the log entry's")
    return seq


def _ts(own: float | None, given: float | None) -> float:
    if own is not None:
        return own
    if given is None:
        raise ValueError("this event has no time of its own: pass ts")
    return given
