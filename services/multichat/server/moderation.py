"""Who may do what in the room: operators, bans, mutes and the lock, and the commands for them.

The host is the room's operator (its console and `multichat kick ...` act as `host`); it can
make members operators for the room's lifetime. A ban keeps an address out (the real one,
behind the tunnel too) and is checked before any password; a ban by name bans the address the
member came from. Every action is logged with who did it. With a backplane, a command naming a
member of another server, and bans, mutes and the lock, go to the other servers (`on_shared`),
which `apply` them. Sync and pure but for the clock:
the room never waits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

from ..protocol.commands import HELP, OPERATOR_HELP, format_duration
from ..protocol.errors import ProtocolError
from ..protocol.events import BanEntry, BanList, Error, Moderate, Notice
from ..protocol.names import check_name, is_address, key_of, name_key
from ..protocol.textmode import describe_ban
from .member import Member
from .room import Room

log = logging.getLogger("multichat.server")

# What the console and `multichat kick` act as; no member can take this name's rights.
HOST = "host"
# Commands whose notice everyone sees: an operator who typed one is not told twice.
BROADCAST = frozenset({"mute", "unmute", "lock", "unlock", "op", "deop"})
# The commands that name a member (with a backplane, it may be on another server).
ON_MEMBERS = frozenset({"kick", "ban", "mute", "unmute", "op", "deop"})
# With a backplane, what holds on every server, each carrying it out at its own door.
ROOM_WIDE = frozenset({"ban", "unban", "lock", "unlock"})
# With a backplane, what every server keeps for a member wherever it is, so that it holds on
# whichever server the member comes back to.
KEPT_BY_NAME = frozenset({"mute", "unmute"})
# A room with more bans than this is under attack from a botnet, not a troll: ban tables of
# IRC servers hold thousands; the oldest are forgotten first.
MAX_BANS = 10_000


def help_text(op: bool) -> str:
    """The commands a member (an operator: and theirs) may type, one per line."""
    rows = HELP + (OPERATOR_HELP if op else ())
    width = max(len(usage) for usage, _ in rows)
    return "\n".join(f"{usage.ljust(width)}  {meaning}" for usage, meaning in rows)


class Moderation:
    """The room's operators, bans, mutes and lock."""

    def __init__(
        self,
        room: Room,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.room = room
        self.locked = False
        self._banned: dict[str, BanEntry] = {}  # by address
        # Mutes by name key: reconnecting does not lift one, and a rename takes it along. Not
        # by address, as bans are: friends behind one router share one, and only one of them
        # was told to be quiet. Monotonic deadlines; math.inf until unmuted.
        self._mutes: dict[str, float] = {}
        self._clock = clock  # ban times people read (and that outlive a restart)
        self._monotonic = monotonic  # mute deadlines
        self.on_ban: Callable[[BanEntry | None, str], None] = lambda ban, address: None
        # With a backplane (relay.py): hands a command to the other servers, which `apply` it
        # (with, for a ban by name handed on by address, the member's name).
        self.on_shared: Callable[[str, Moderate, str], None] | None = None
        self._applying = False  # carrying out another server's command: not handed on again
        self._handlers: dict[str, Callable[[str, Moderate], Notice | BanList | Error]] = {
            "kick": self._kick,
            "ban": self._ban,
            "unban": self._unban,
            "mute": self._mute,
            "unmute": self._unmute,
            "lock": self._lock,
            "unlock": self._unlock,
            "op": self._op,
            "deop": self._deop,
            "bans": self._list,
        }

    # -- checks the session makes --

    def banned(self, source: str) -> Error | None:
        """The refusal for a connection from `source`, if it is banned."""
        ban = self._banned.get(source)
        if ban is None:
            return None
        if ban.until is not None and ban.until <= self._clock():
            del self._banned[source]
            return None
        until = f" until {time.strftime('%H:%M', time.localtime(ban.until))}" if ban.until else ""
        why = f": {ban.reason}" if ban.reason else ""
        return Error("banned", f"you are banned from this room{until}{why}")

    def muted(self, member: Member) -> Error | None:
        """The refusal of `member`'s message, if it is muted."""
        until = self._mutes.get(member.key)
        if until is None:
            return None
        now = self._monotonic()
        if until <= now:
            del self._mutes[member.key]
            return None
        if math.isinf(until):
            return Error("muted", "you are muted: you can read but not say anything")
        left = format_duration(until - now)
        return Error("muted", f"you are muted for {left} more: you can read but not say anything")

    def renamed(self, old_key: str, new_key: str) -> None:
        """A member's name changed: its mute goes with it."""
        if old_key in self._mutes:
            self._mutes[new_key] = self._mutes.pop(old_key)

    # -- commands --

    def restore(
        self,
        bans: list[BanEntry],
        locked: bool | None = None,
        mutes: dict[str, float | None] | None = None,
    ) -> None:
        """Bans kept from before a restart (and, with a backplane, the lock and the mutes as
        Redis keeps them, by name key until a wall-clock time: the same on every server)."""
        for ban in bans:
            self._banned[ban.address] = ban
        if locked is not None:
            self.locked = locked
        now = self._clock()
        for key, until in (mutes or {}).items():
            if until is None:
                self._mutes[key] = math.inf
            elif until > now:
                self._mutes[key] = self._monotonic() + (until - now)

    def _keep_mute(self, command: Moderate) -> None:
        """Keep a mute (or lift it) by the name it names, for a member not on this server."""
        key = key_of(command.target)
        if key is not None:
            self._set_mute(key, command)

    def _set_mute(self, key: str, command: Moderate) -> None:
        """Mute (for `command.seconds`, or until lifted) or unmute the name `key`."""
        if command.command == "unmute":
            self._mutes.pop(key, None)
        else:
            seconds = command.seconds
            self._mutes[key] = math.inf if seconds is None else self._monotonic() + seconds

    def command(
        self, actor: str, command: Moderate, *, by_host: bool = False
    ) -> Notice | BanList | Error:
        """Carry out `command` for `actor` (a member's name, or the host); the answer to it."""
        if not by_host:
            member = self.room.find(actor)
            if member is None or not member.op:
                return Error("not_allowed", f"/{command.command} is for operators; ask the host")
        handler = self._handlers.get(command.command)
        if handler is None:
            return Error("bad_command", f"unknown command {command.command!r}")
        shared = self.on_shared
        if shared and command.command in ON_MEMBERS and self.room.on_another_server(command.target):
            # Their server carries it out (`apply`), and tells the room what a notice says.
            shared(actor, command, "")
            if command.command in KEPT_BY_NAME:
                self._keep_mute(command)
            answer: Notice | BanList | Error = self._handed_on(actor, command)
        else:
            answer = handler(actor, command)
        if isinstance(answer, Notice):
            log.info("moderation by %s: %s", actor, answer.text)
        return answer

    def apply(self, actor: str, command: Moderate, banned_name: str = "") -> None:
        """Carry out a command another server handed on (`on_shared`), to this server's own
        members and door. A command on a member of this server runs as if typed here (its
        notice goes to the room from here); a room-wide one changes this server's door
        quietly, as the server it was typed on told the room. `banned_name`: the member a
        ban by address was made for, by name, on its own server."""
        name, target = command.command, command.target
        on_member = name in ON_MEMBERS and not is_address(target)
        if name in KEPT_BY_NAME and self.room.find(target) is None:
            self._keep_mute(command)  # for when the member comes here
            return
        if (on_member and self.room.find(target) is None) or not (on_member or name in ROOM_WIDE):
            return  # a member not here (or gone meanwhile): nothing to do
        # A ban by name is by the member's address, which only this server knows: it is handed
        # on again as a ban of that address. Nothing else is handed on again.
        self._applying = not (on_member and name == "ban")
        try:
            if name in ("lock", "unlock"):
                self.locked = name == "lock"  # quietly: the room was told where it was typed
                answer: Notice | BanList | Error = Notice(
                    f"{actor} {name}ed the room", self._clock()
                )
            else:
                answer = self._handlers[name](actor, command)
        finally:
            self._applying = False
        ban = self._banned.get(target) if name == "ban" and banned_name else None
        if ban is not None and not ban.name:
            # The member's name, which only its server knew: `/bans` shows it, `unban NAME`
            # lifts it, here as there.
            self._banned[target] = dataclasses.replace(ban, name=banned_name)
        if isinstance(answer, Notice):
            log.info("moderation by %s on another server: %s", actor, answer.text)

    def _share(self, actor: str, command: Moderate, name: str = "") -> None:
        if self.on_shared is not None and not self._applying:
            self.on_shared(actor, command, name)

    def _handed_on(self, actor: str, command: Moderate) -> Notice:
        """The answer to a command on a member of another server, which carries it out."""
        target = self.room.remote.get(name_key(check_name(command.target)), command.target)
        return Notice(_said(command, actor, target), self._clock())

    def _target(self, actor: str, name: str, verb: str) -> Member | Error:
        member = self.room.find(name)
        if member is None:
            return Error("no_such_member", f"nobody called {name!r} is in the room")
        if member.name == actor:
            return Error("not_allowed", f"you cannot {verb} yourself")
        return member

    def _notice(self, text: str) -> Notice:
        notice = Notice(text, self._clock())
        self.room.broadcast(notice)
        return notice

    def _remove(self, member: Member, code: str, text: str, reason: str) -> None:
        """Tell `member` why, take it out of the room, close it once that is sent."""
        self.room.remove(member, reason)
        self.room.send_event_nowait(member, Error(code, text))
        member.outlet.finish_nowait()

    def _kick(self, actor: str, command: Moderate) -> Notice | Error:
        member = self._target(actor, command.target, "kick")
        if isinstance(member, Error):
            return member
        why = command.reason or "no reason given"
        self._remove(member, "kicked", f"you were kicked by {actor}: {why}", f"kicked: {why}")
        return Notice(_said(command, actor, member.name), self._clock())

    def _ban(self, actor: str, command: Moderate) -> Notice | Error:
        target = command.target
        member = self.room.find(target)
        if member is not None and member.name == actor:
            return Error("not_allowed", "you cannot ban yourself")
        address = member.source if member is not None else target
        if member is None and not is_address(target):
            return Error("no_such_member", f"nobody called {target!r} is in the room")
        until = None if command.seconds is None else self._clock() + command.seconds
        ban = BanEntry(address, member.name if member else "", until, command.reason, actor)
        if len(self._banned) >= MAX_BANS and address not in self._banned:
            self._banned.pop(next(iter(self._banned)))
        self._banned[address] = ban
        self.on_ban(ban, address)
        self._share(actor, Moderate("ban", address, command.reason, command.seconds), ban.name)
        why = command.reason or "no reason given"
        for victim in [m for m in self.room.members() if m.source == address]:
            self._remove(victim, "banned", f"you were banned by {actor}: {why}", f"banned: {why}")
        who = describe_ban(address, ban.name, None, "", "")
        return Notice(_said(command, actor, who), self._clock())

    def _unban(self, actor: str, command: Moderate) -> Notice | Error:
        target = command.target
        found = [
            address
            for address, ban in self._banned.items()
            if address == target or (ban.name and _same_name(ban.name, target))
        ]
        if not found:
            return Error("no_such_ban", f"no ban for {target!r}; /bans lists them")
        for address in found:
            del self._banned[address]
            self.on_ban(None, address)
            self._share(actor, Moderate("unban", address))
        return Notice(f"{actor} lifted the ban on {target}", self._clock())

    def _mute(self, actor: str, command: Moderate) -> Notice | Error:
        member = self._target(actor, command.target, "mute")
        if isinstance(member, Error):
            return member
        self._set_mute(member.key, command)
        self._share(actor, Moderate("mute", member.name, command.reason, command.seconds))
        return self._notice(_said(command, actor, member.name))

    def _unmute(self, actor: str, command: Moderate) -> Notice | Error:
        member = self._target(actor, command.target, "unmute")
        if isinstance(member, Error):
            # A mute belongs to the name: it can be lifted while nobody has it (with a
            # backplane, Redis keeps it until then).
            key = key_of(command.target)
            if key is None or key not in self._mutes or member.code != "no_such_member":
                return member
            self._mutes.pop(key)
            name = command.target
        else:
            self._set_mute(member.key, command)
            name = member.name
        self._share(actor, Moderate("unmute", name))
        return self._notice(_said(command, actor, name))

    def _lock(self, actor: str, command: Moderate) -> Notice:
        self.locked = True
        self._share(actor, command)
        return self._notice(f"{actor} locked the room: nobody new can join")

    def _unlock(self, actor: str, command: Moderate) -> Notice:
        self.locked = False
        self._share(actor, command)
        return self._notice(f"{actor} unlocked the room")

    def _op(self, actor: str, command: Moderate) -> Notice | Error:
        member = self.room.find(command.target)
        if member is None:
            return Error("no_such_member", f"nobody called {command.target!r} is in the room")
        member.op = True
        self._share(actor, command)  # every server's `who` marks it
        return self._notice(_said(command, actor, member.name))

    def _deop(self, actor: str, command: Moderate) -> Notice | Error:
        member = self._target(actor, command.target, "deop")
        if isinstance(member, Error):
            return member
        member.op = False
        self._share(actor, command)
        return self._notice(_said(command, actor, member.name))

    def _list(self, actor: str, command: Moderate) -> BanList:
        now = self._clock()
        live = [b for b in self._banned.values() if b.until is None or b.until > now]
        return BanList(tuple(live))


# What the notice of each command on a member says: the same from the member's own server
# and from the one the command was typed on (with a backplane).
_SAID = {
    "kick": "{actor} kicked {target} ({why})",
    "ban": "{actor} banned {target}{span} ({why})",
    "mute": "{actor} muted {target}{span}",
    "unmute": "{actor} unmuted {target}",
    "op": "{actor} made {target} an operator",
    "deop": "{actor} took operator rights from {target}",
}


def _said(command: Moderate, actor: str, target: str) -> str:
    span = f" for {format_duration(command.seconds)}" if command.seconds else ""
    why = command.reason or "no reason given"
    return _SAID[command.command].format(actor=actor, target=target, span=span, why=why)


def _same_name(a: str, b: str) -> bool:
    try:
        return name_key(a) == name_key(b)
    except ProtocolError:
        return False
