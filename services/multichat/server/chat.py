"""What a member asks of the room beyond a public message: private messages, a new name, away
and back, the topic, help, and moderation commands. Each request gets at most one answer, for
the asker alone (an error, a notice, a ban list); what the room should see, the room appends
itself. Each acts in the member's own room (its moderation, its topic). Sync: the room never
waits. With a backplane, renames and private messages wait for Redis in the member's own task
(`answer_relayed`, relay.py).
"""

from __future__ import annotations

from ..protocol.events import (
    Away,
    Back,
    BanList,
    CameBack,
    Error,
    Help,
    Moderate,
    Nick,
    Notice,
    Say,
    SetTopic,
    Topic,
    WentAway,
)
from ..protocol.sanitize import clean_for_terminal
from .member import Member
from .moderation import BROADCAST, help_text
from .room import Refused
from .rooms import HostedRoom, Rooms

# One rename per 10 s: enough to fix a typo, too slow to flood the room with renames (IRC
# servers throttle NICK the same way: InspIRCd's nickflood, ergo's nick-change limit).
NICK_INTERVAL_SECONDS = 10.0
# A reason for being away is a status line, not a message.
MAX_AWAY_CHARS = 200
# IRC networks' TOPICLEN is 300 to 390.
MAX_TOPIC_CHARS = 300

Request = Say | Nick | Away | Back | SetTopic | Help | Moderate
Answer = Error | Notice | BanList | WentAway


def _line(text: str, limit: int) -> str:
    """One line of at most `limit` characters, safe on every terminal."""
    return clean_for_terminal(text, single_line=True).strip()[:limit]


async def answer_relayed(
    rooms: Rooms, hosted: HostedRoom, member: Member, request: Request, now: float
) -> Answer | None:
    """`answer`, for a room served through the backplane: what must go through Redis does,
    and changes nothing here unless Redis took it (the topic: once it comes back)."""
    relay = hosted.relay
    if relay is None:
        return answer(rooms, hosted, member, request, now)
    match request:
        case SetTopic(text):
            if not member.op:
                return Error("not_allowed", "only operators set the topic; ask the host")
            return await relay.notify(member, Topic(_line(text, MAX_TOPIC_CHARS), member.name))
        case Away(text):
            away = _line(text, MAX_AWAY_CHARS)
            error = await relay.notify(member, WentAway(member.name, away))
            if error is None:
                member.away = away
            return error
        case Back():
            if member.away is None:
                return None
            error = await relay.notify(member, CameBack(member.name))
            if error is None:
                member.away = None
            return error
    if not relay.handles(request):
        return answer(rooms, hosted, member, request, now)
    assert isinstance(request, Nick | Say)
    old_key = member.key
    wait = member.renamed_at + NICK_INTERVAL_SECONDS - now
    error = await relay.answer(member, request, wait)
    if isinstance(request, Nick) and error is None:
        for each in rooms:  # a mute in any room goes with the name
            each.moderation.renamed(old_key, member.key)
        member.renamed_at = now
    return error


def answer(
    rooms: Rooms, hosted: HostedRoom, member: Member, request: Request, now: float
) -> Answer | None:
    """Carry out `request` from `member` of `hosted` (flood control already charged); its
    answer."""
    room = hosted.room
    match request:
        case Say(text, id, to, action) if to is not None:
            refusal = hosted.moderation.muted(member)
            if refusal is not None:
                return refusal
            recipient = room.find(to)
            if recipient is None:
                elsewhere = rooms.where(to)
                if elsewhere is not None:
                    return Error("no_such_member", f"{to!r} is in {elsewhere.name}, not this room")
                return Error("no_such_member", f"nobody called {to!r} is in the room")
            try:
                room.post_private(member, recipient, text, id, action=action)
            except Refused as exc:
                return Error(exc.code, exc.message)
        case Nick(name):
            wait = member.renamed_at + NICK_INTERVAL_SECONDS - now
            if wait > 0:
                every = f"one new name per {NICK_INTERVAL_SECONDS:.0f} s"
                return Error("too_fast", f"{every}; wait {wait:.0f} s")
            old_key = member.key
            try:
                room.rename(member, name)
            except Refused as exc:
                return Error(exc.code, exc.message)
            for each in rooms:  # a mute in any room goes with the name
                each.moderation.renamed(old_key, member.key)
            member.renamed_at = now
        case Away(text):
            member.away = _line(text, MAX_AWAY_CHARS)
            room.broadcast(WentAway(member.name, member.away))
        case Back():
            if member.away is not None:
                member.away = None
                room.broadcast(CameBack(member.name))
        case SetTopic(text):
            if not member.op:
                return Error("not_allowed", "only operators set the topic; ask the host")
            room.topic = _line(text, MAX_TOPIC_CHARS)
            room.broadcast(Topic(room.topic, member.name))
        case Help():
            return Notice(help_text(member.op), room.now())
        case Moderate(command):
            answer = hosted.moderation.command(member.name, request)
            if isinstance(answer, Notice) and command in BROADCAST:
                return None  # the room's copy of the notice says it
            return answer
    return None
