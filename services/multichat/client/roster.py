"""The room as a member sees it, beside the messages: our own name, the room's, who is online,
away and an operator, and the topic.

The connection keeps it current from the room's events, synchronously and in order, so the
interface shows it as it stands; a rejoin asks for the name and the room we have now (a `/nick`
or a `/join` since the first login is followed). No I/O here.
"""

from __future__ import annotations

from ..protocol.events import (
    CameBack,
    Event,
    Join,
    Leave,
    Members,
    Renamed,
    Topic,
    Welcome,
    WentAway,
)


class Roster:
    """What the room says of itself and of its members, as of its last word."""

    def __init__(self, name: str) -> None:
        self.name = name  # ours, as the room knows it
        self.room = ""
        self.members: list[str] = []
        self.away: dict[str, str] = {}  # who is away, and why (as far as we have heard)
        self.ops: set[str] = set()  # the room's operators (as of the last member list)
        self.topic = ""
        self.welcome_seq = 0  # the room's newest message when we joined: older ones are history

    def welcomed(self, welcome: Welcome, *, moved: bool = False) -> None:
        """A room's welcome: on joining, on rejoining, or `moved` there by `/join` (whose away
        and operators we know nothing of yet)."""
        self.name = welcome.name
        self.room = welcome.room
        self.members = list(welcome.members)
        self.topic = welcome.topic
        self.welcome_seq = welcome.seq
        if moved:
            self.away.clear()
            self.ops.clear()

    def listed(self, members: Members) -> None:
        """The answer to `who`: everyone, who is away, and the operators."""
        self.members = list(members.names)
        self.away = dict(members.away)
        self.ops = set(members.ops)

    def follow(self, event: Event) -> None:
        """Keep up with a join, a leave, a rename, away and back, and the topic."""
        match event:
            case Join(name):
                if name not in self.members:
                    self.members.append(name)
            case Leave(name):
                if name in self.members:
                    self.members.remove(name)
                self.away.pop(name, None)
                self.ops.discard(name)
            case Renamed(old, new):
                if old == self.name:
                    self.name = new  # a rejoin asks for the name we have now
                self.members = [new if name == old else name for name in self.members]
                if old in self.away:
                    self.away[new] = self.away.pop(old)
                if old in self.ops:
                    self.ops.discard(old)
                    self.ops.add(new)
            case WentAway(name, text):
                self.away[name] = text
            case CameBack(name):
                self.away.pop(name, None)
            case Topic(text):
                self.topic = text

    def welcome_now(self) -> Welcome:
        """The welcome as it stands now: the current name, room and members."""
        return Welcome(
            self.name, self.room, tuple(self.members), topic=self.topic, seq=self.welcome_seq
        )
