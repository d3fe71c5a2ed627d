"""The server's rooms: each a self-contained `HostedRoom`, found by name in one registry.

A hosted room is a world of its own: its members and log (its own `seq`), its fan-out task,
its operators, bans, mutes and lock, its topic, and its history in a store of its own. What
the rooms of one server share is the server: the password, personal invites, the per-source
gates, and names: a name in use in one room is taken in all of them (`Room.elsewhere`), so
`/msg`, `/kick` and the host's commands can always say who they mean.

Rooms are made by the host (`--room`, again and again; the console's `room add`) or, with
`open_rooms`, by the first member who asks for one; `Limits.max_rooms` bounds them all. A room
lasts until the server stops. A room is told apart from another as names are: "Den", "den"
and a Cyrillic "D\u0435n" are one room (`protocol.names.room_key`).

With a backplane (`backplane`), every room is also a room of every other server of it: its
`HostedRoom.relay` (relay.py) feeds its log from Redis, and its history and resume come from
there, not from a store of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..protocol.errors import ProtocolError
from ..protocol.events import RoomInfo, RoomList
from ..protocol.names import check_room_name, room_key
from .archive import Archive
from .backplane_codec import BackplaneEntry, Seat
from .backplane_errors import BackplaneError
from .fanout import Fanout
from .history import HistoryError, HistoryStore
from .history_process import HistoryProcess
from .history_settings import HistorySettings
from .history_writer import HistoryWriter, prune_periodically
from .limits import Limits
from .moderation import Moderation
from .relay import Relay
from .room import Refused, Room

if TYPE_CHECKING:  # only a server with a backplane loads it, and Redis's client (coredis)
    from .backplane import Backplane

log = logging.getLogger("multichat.server")

# Opens (or makes) the history of the room with this display name; None keeps none. Blocking:
# called in a worker thread. Raises HistoryError.
OpenHistory = Callable[[str], HistoryStore | None]


class HostedRoom:
    """One room of the server: its members and log, fan-out, moderation and history.

    Members may join once `ready` is set: its history is loaded by then, and its fan-out runs.
    """

    def __init__(
        self,
        name: str,
        *,
        limits: Limits,
        history: HistoryStore | None = None,
        made_by: str = "",
        backplane: Backplane | None = None,
    ) -> None:
        self.name = name
        self.key = room_key(name)
        self.made_by = made_by  # "" for the host; else the member whose `join` made it
        self.room = Room(name, limits=limits, monotonic=trio.current_time)
        self.fanout = Fanout(self.room)
        self.moderation = Moderation(self.room, clock=self.room.now, monotonic=self.room.monotonic)
        self.history = None if backplane is not None else history
        # With a backplane: the room's log comes from Redis, and so do history and resume.
        self.relay = Relay(self.room, self.key, backplane) if backplane is not None else None
        if self.relay is not None:
            # Moderation holds across servers: a command on a member of another server, a ban
            # or the lock go through Redis to every server.
            self.moderation.on_shared = self.relay.share_moderation
            self.relay.on_moderate = self.moderation.apply
            self.relay.on_restore = self.moderation.restore
            self.relay.on_renamed = self.moderation.renamed
        self.ready = trio.Event()
        self.failed: str | None = None  # why it could not be opened (then it is not listed)

    def __repr__(self) -> str:
        return f"<HostedRoom {self.name!r}: {len(self.room)} members>"

    def info(self, *, names: bool = False) -> RoomInfo:
        """The room as `rooms` lists it; with `names`, who is in it too (the host's `status`)."""
        room = self.room
        # With a backplane, the members of every server (`Room.remote`: the others).
        count = len(room) + len(room.remote)
        return RoomInfo(room.name, count, room.topic, room.names() if names else ())

    async def open(
        self, keeper: trio.Nursery, settings: HistorySettings, process: HistoryProcess
    ) -> None:
        """Carry on from the stored history (its last entries, its seq, its bans), and keep
        storing through `process`: the writer and the pruner run in `keeper`, which outlives
        every session (and `process` outlives `keeper`).
        With a backplane, carry on from Redis instead. Raises BackplaneError, or HistoryError
        (the history's process cannot start)."""
        if self.relay is not None:
            await self.relay.open()
            return
        store = self.history
        if store is None:
            return
        limits = self.room.limits
        recent = await trio.to_thread.run_sync(store.recent, limits.history_entries)
        self.room.preload(
            [e for e in (s.to_event() for s in recent) if e is not None], store.last_seq()
        )
        self.moderation.restore(await trio.to_thread.run_sync(store.bans))
        archive: Archive | None = None
        writer = HistoryWriter(
            store,
            process,
            on_failing=lambda reason: archive.failing(reason) if archive else None,
            on_flushed=lambda count: archive.flushed(count) if archive else None,
        )
        archive = Archive(self.room, writer)
        await process.start()
        await keeper.start(writer.run)
        await keeper.start(partial(prune_periodically, store, settings))
        self.room.persist = archive.persist
        self.moderation.on_ban = writer.set_ban_nowait


class Rooms:
    """Every room of one server by name key, the default one first."""

    def __init__(
        self,
        default: str,
        *,
        limits: Limits,
        history: HistoryStore | None = None,
        open_history: OpenHistory | None = None,
        history_settings: HistorySettings = HistorySettings(),
        open_rooms: bool = False,
        backplane: Backplane | None = None,
    ) -> None:
        self.limits = limits
        self.backplane = backplane
        self.open_rooms = open_rooms
        self.history_settings = history_settings
        # Commits every room's history; `ChatServer.serve` runs it, outliving the writers.
        self.history_process = HistoryProcess()
        self._open_history = open_history
        self._rooms: dict[str, HostedRoom] = {}
        self.closed = False
        # Whether a name (by key) is kept for the bearer of a personal invite (context.py).
        self.reserved: Callable[[str], bool] = lambda key: False
        # Set by `start`: where rooms made later run their tasks.
        self._keeper: trio.Nursery | None = None
        self._sessions: trio.Nursery | None = None
        try:
            display = check_room_name(default)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        self.default = self._register(
            HostedRoom(display, limits=limits, history=history, backplane=backplane)
        )

    def __iter__(self) -> Iterator[HostedRoom]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)

    # -- finding rooms --

    def get(self, name: str | None) -> HostedRoom | None:
        """The room `name` means (None: the default room), or None if there is none now."""
        if name is None:
            return self.default
        try:
            return self._rooms.get(room_key(check_room_name(name)))
        except ProtocolError:
            return None

    def find(self, name: str) -> HostedRoom:
        """The room `name` means; Refused (`bad_room`, `no_such_room`) if there is none."""
        display = self._display(name)
        hosted = self._rooms.get(room_key(display))
        if hosted is None:
            raise Refused("no_such_room", f"there is no room called {display!r} here")
        return hosted

    def check(self, name: str | None) -> None:
        """Raise Refused unless `enter(name)` may find or make the room: `bad_room`,
        `no_such_room`, `too_many_rooms` or `shutting_down`. Makes nothing."""
        if name is None:
            return
        display = self._display(name)
        if room_key(display) not in self._rooms:
            self._check_new(display, by_member=True)

    async def enter(self, name: str | None, *, by: str = "") -> HostedRoom:
        """The room `name` means (None: the default), once it is ready; with `open_rooms`, made
        for member `by` if there is none. Raises Refused, as `check` says, or `unavailable`."""
        if name is None:
            hosted = self.default
        else:
            display = self._display(name)
            found = self._rooms.get(room_key(display))
            hosted = found or self.add_nowait(display, by=by or "a member")
        await hosted.ready.wait()
        if hosted.failed is not None:
            raise Refused("unavailable", f"the room {hosted.name!r} cannot open: {hosted.failed}")
        return hosted

    def where(self, name: str) -> HostedRoom | None:
        """The room the member called `name` is in, if any."""
        for hosted in self._rooms.values():
            if hosted.room.find(name) is not None:
                return hosted
        return None

    def listing(self) -> RoomList:
        """The answer to `rooms`: each room, how many are in it, its topic."""
        return RoomList(tuple(hosted.info() for hosted in self._rooms.values()))

    def names(self) -> tuple[str, ...]:
        """Every member of the server, room by room."""
        return tuple(name for hosted in self._rooms.values() for name in hosted.room.names())

    # -- making rooms --

    def add_nowait(self, name: str, *, by: str = "") -> HostedRoom:
        """Make the room `name` (for member `by`; "" for the host) and start opening it.

        Raises Refused: `bad_room`, `room_exists`, `too_many_rooms`, `shutting_down`, and for
        a member where rooms are not open, `no_such_room`.
        """
        display = self._display(name)
        if room_key(display) in self._rooms:
            raise Refused("room_exists", f"there is a room called {display!r} already")
        self._check_new(display, by_member=bool(by))
        hosted = self._register(
            HostedRoom(display, limits=self.limits, made_by=by, backplane=self.backplane)
        )
        log.info("room %r made by %s", display, by or "the host")
        if self._keeper is not None:
            self._keeper.start_soon(self._open, hosted)
        return hosted

    def _display(self, name: str) -> str:
        try:
            return check_room_name(name)
        except ProtocolError as exc:
            raise Refused(exc.code, str(exc)) from None

    def _check_new(self, display: str, *, by_member: bool) -> None:
        if self.closed:
            raise Refused("shutting_down", "the server is closing")
        if by_member and not self.open_rooms:
            raise Refused(
                "no_such_room", f"there is no room called {display!r} here; /rooms lists them"
            )
        if len(self._rooms) >= self.limits.max_rooms:
            raise Refused(
                "too_many_rooms",
                f"this server has {self.limits.max_rooms} rooms, its most; join one of them",
            )

    def _register(self, hosted: HostedRoom) -> HostedRoom:
        room = hosted.room
        room.reserved = lambda key: self.reserved(key)
        room.elsewhere = partial(self._elsewhere, hosted)
        self._rooms[hosted.key] = hosted
        return hosted

    # -- the backplane's callbacks --

    def receive(self, key: str, entries: Sequence[BackplaneEntry]) -> None:
        """The backplane's `on_entries`: the room with the key `key` reads them."""
        hosted = self._rooms.get(key)
        if hosted is not None and hosted.relay is not None:
            hosted.relay.receive(entries)

    def seats_lost(self, seats: list[Seat]) -> None:
        """The backplane's `on_seats_lost`: those members' rooms close their connections."""
        for hosted in self._rooms.values():
            if hosted.relay is not None:
                hosted.relay.seats_lost([seat for seat in seats if seat.room == hosted.key])

    def availability(self, up: bool) -> None:
        """The backplane's `on_availability`: every room tells its members."""
        for hosted in self._rooms.values():
            if hosted.relay is not None:
                hosted.relay.availability(up)

    def _elsewhere(self, asking: HostedRoom, key: str) -> bool:
        return any(h.room.holds(key) for h in self._rooms.values() if h is not asking)

    # -- running --

    async def start(self, keeper: trio.Nursery, sessions: trio.Nursery) -> None:
        """Open every room made so far and run its tasks: history writers in `keeper` (it
        outlives the sessions, so the last echoes are stored), fan-outs in `sessions` (each
        delivers its room's shutdown notice, then returns). Rooms made later start at once."""
        self._keeper, self._sessions = keeper, sessions
        for hosted in self:
            await self._open(hosted, at_start=True)

    async def _open(self, hosted: HostedRoom, *, at_start: bool = False) -> None:
        try:
            if (
                hosted.history is None
                and hosted.relay is None
                and hosted is not self.default
                and self._open_history
            ):
                hosted.history = await trio.to_thread.run_sync(self._open_history, hosted.name)
            assert self._keeper is not None
            await hosted.open(self._keeper, self.history_settings, self.history_process)
        except (HistoryError, OSError, BackplaneError) as exc:
            if at_start:
                raise
            log.error("cannot open room %r: %s", hosted.name, exc)
            hosted.failed = str(exc)
            if self._rooms.get(hosted.key) is hosted:
                del self._rooms[hosted.key]
            hosted.ready.set()
            return
        assert self._sessions is not None
        self._sessions.start_soon(hosted.fanout.run)
        hosted.ready.set()

    def sweep_nowait(self) -> None:
        """Check every member's backlog in every room (see `Room.sweep_nowait`)."""
        for hosted in self._rooms.values():
            hosted.room.sweep_nowait()

    def close(self, reason: str) -> None:
        """The server is closing: no new rooms, and every room's last entry is the notice."""
        self.closed = True
        for hosted in self._rooms.values():
            hosted.room.close(reason)
