"""Several servers, one room: the room's log goes through Redis, and every server reads it back.

Without a backplane a room's log is appended to by its one server. With one, a server asks
Redis to append (`seats.publish`, `seats.join`, `seats.rename`, `seats.leave_nowait`:
backplane_seats.py), and Redis decides the order and
the numbering, once, for everyone (backplane_scripts.py). Every server reads each room's
stream from where it left off and hands what comes, in order, to `on_entries`: its members'
own posts too, so the echo that acknowledges a message is the stream's, in the stream's order.
An entry names its origin (the server's node id, the member's token there, the client's
message id), which is how a server finds its member's echo among everyone's entries.

    backplane = Backplane(parse_address("redis://127.0.0.1:6379/0"), on_entries=...)
    await nursery.start(backplane.run)
    snapshot = await backplane.open_room(room, history=20)   # then on_entries from there
    seat = await backplane.seats.join(room, "alice")         # NameTaken: on some server
    seq = await backplane.seats.publish(room, entry, seat=seat, id="42")
    backplane.seats.leave_nowait(seat, "quit")

Redis away: `publish`, `join` and `rename` raise BackplaneUnavailable at once (members stay
connected, and are told `unavailable`), a leave waits for Redis, and the reader carries on
from the last entry it saw once Redis is back: nothing skipped, nothing twice. Servers that
die are reaped by the others (backplane_nodes.py); one that stops cleanly (`run` cancelled)
makes its members leave itself. docs/backplane.md says what each failure costs.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from .backplane_address import BackplaneAddress, parse_address
from .backplane_codec import (
    NAMESPACE,
    BackplaneEntry,
    Keys,
    Origin,
    RemoteMember,
    Seat,
    decode_member,
    member_order,
    parse_id,
)
from .backplane_errors import BackplaneError, BackplaneUnavailable, NameTaken, NotJoined
from .backplane_link import (
    COMMAND_SECONDS,
    LINK_ERRORS,
    REFUSALS,
    START_ERRORS,
    Link,
    RedisClient,
    describe,
    open_client,
    quiet_coredis,
    unless_cancelled,
)
from .backplane_nodes import (
    Liveness,
    check_node,
    check_password,
    retire,
)
from .backplane_reader import (
    Reader,
    decode_script_entries,
    decode_stream,
    sequence,
)
from .backplane_resp import RespConnection
from .backplane_scripts import expired_script, since_script, snapshot_script
from .backplane_seats import ABANDONED_REASON, Seats
from .backplane_snapshot import Replay, RoomSnapshot, decode_snapshot
from .backplane_writer import Writer
from .limits import NODE_TIMEOUT_SECONDS

log = logging.getLogger("multichat.backplane")

T = TypeVar("T")

# Each room's stream keeps about this many entries (XADD MAXLEN ~): the history's own default
# `keep_entries`, about 15 MB of a busy room in Redis's memory (150 bytes an entry, measured).
# Members resuming, and newcomers, are served from it; what is older is gone from Redis.
RETENTION_ENTRIES = 100_000
# A server that stops waits this long for its members' leaves to reach Redis; past it, the
# others reap them after node_timeout anyway.
RETIRE_SECONDS = 2.0
# A resume asks for the newest N messages; the joins and leaves between them come too, up to
# this many entries beyond N, so that a room's churn cannot make one answer unbounded.
REPLAY_SLACK_ENTRIES = 1_000
# Exclusive ranges in XRANGE (`(41-0`) came in 6.2; Debian 12 ships 7.0.
MIN_REDIS = (6, 2)
# Node ids and namespaces go into key and client names: nothing that needs quoting.
_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Backplane:
    """This server's node of a backplane. Run it with `await nursery.start(backplane.run)`.

    `on_entries(room, entries)` gets every entry of every open room, in stream order, each
    once (sync: it must not wait). `on_seats_lost(seats)` gets the members this server still
    serves that the backplane no longer has (Redis lost its data, or the others took this
    server for dead and made them leave): close their connections, and they join again.
    `on_availability(up)` hears Redis go and come back. Members join, rename, leave and post
    through `seats` (backplane_seats.Seats).
    """

    def __init__(
        self,
        address: BackplaneAddress,
        *,
        on_entries: Callable[[str, Sequence[BackplaneEntry]], None],
        on_seats_lost: Callable[[list[Seat]], None] = lambda seats: None,
        on_availability: Callable[[bool], None] = lambda up: None,
        password: str | None = None,
        node_id: str | None = None,
        retention: int = RETENTION_ENTRIES,
        node_timeout: float = NODE_TIMEOUT_SECONDS,
        namespace: str = NAMESPACE,
    ) -> None:
        if retention < 0:
            raise ValueError("retention must be 0 (no cap) or more")
        for what, value in (("node id", node_id), ("namespace", namespace)):
            if value is not None and not _PLAIN.fullmatch(value):
                raise ValueError(f"a {what} is 1 to 64 letters, digits, '.', '_' or '-'")
        self.address = address
        self.node_id = node_id or secrets.token_hex(6)
        self._password = password
        self._on_seats_lost = on_seats_lost
        self._keys = Keys(namespace)
        self._retention = retention
        self._link = Link(address, on_availability)
        self._floors: dict[str, tuple[int, int]] = {}
        self._writer = Writer(
            self._link,
            node=self.node_id,
            keys=self._keys,
            retention=retention,
            floors=self._floors,
        )
        self._liveness = Liveness(
            self._link,
            node=self.node_id,
            keys=self._keys,
            timeout=node_timeout,
            retention=retention,
            floors=self._floors,
            recover=self._recover,
            seats_held=lambda: len(self.seats),
        )
        self._reader = Reader(
            self._link,
            self._keys,
            on_entries=on_entries,
            advance=self._writer.advance,
            answered=self._liveness.poke,
        )
        # This server's members, and the changes made through them (join, publish, ...).
        self.seats = Seats(self._writer, node=self.node_id)
        self._client: RedisClient | None = None
        self._closing = trio.Event()
        quiet_coredis()

    @property
    def available(self) -> bool:
        """Whether Redis answers, as far as this server knows."""
        return self._link.up

    # -- running --

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the backplane, then keep the node alive, read the open rooms and apply this
        server's changes until cancelled; then make its members leave (RETIRE_SECONDS at most).

        Raises BackplaneError, with a one-line message, if Redis cannot be reached or refuses
        this server (another password) at start: a caller that starts it with `nursery.start`
        catches it around that call, or it arrives wrapped in the nursery's ExceptionGroup.
        """
        failure: BackplaneError | None = None
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self._hold)
            except BackplaneError as exc:
                # Raised in here, it would reach the caller wrapped in an ExceptionGroup.
                failure = exc
            else:
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._closing.set()
        if failure is not None:
            raise failure

    async def _hold(self, *, task_status: trio.TaskStatus[None]) -> None:
        # The clients and the node's tasks live in a shielded scope, so that when `run` is
        # cancelled the node can still tell Redis its members are leaving; `_closing` ends it.
        failure: BackplaneError | None = None
        with trio.CancelScope(shield=True):
            async with open_client(
                self.address, self.node_id, stream_timeout=COMMAND_SECONDS
            ) as client:
                try:
                    await self._register(client)
                except BackplaneError as exc:
                    # Raised in here, it would leave coredis's task group in an ExceptionGroup.
                    failure = exc
                else:
                    await self._work(client, task_status)
        if failure is not None:
            raise failure

    async def _work(self, client: RedisClient, task_status: trio.TaskStatus[None]) -> None:
        self._client = client
        # The hot path, a post's APPLY and the stream's XREAD, each on a lean connection of its
        # own (backplane_resp.py): the reader's blocks it.
        writing = RespConnection(self.address, self.node_id)
        reading = RespConnection(self.address, self.node_id)
        try:
            async with trio.open_nursery() as work:
                await work.start(self._writer.run, writing)
                await work.start(self._liveness.run, client)
                await work.start(self._reader.run, reading)
                task_status.started()
                await self._closing.wait()
                with trio.move_on_after(RETIRE_SECONDS) as retiring:
                    await self._retire(client)
                if retiring.cancelled_caught:
                    self._not_retired(f"no answer within {RETIRE_SECONDS:.0f} s")
                work.cancel_scope.cancel()
        finally:
            self._client = None
            await writing.aclose()
            await reading.aclose()

    async def _register(self, client: RedisClient) -> None:
        with trio.move_on_after(4 * COMMAND_SECONDS) as scope:
            try:
                await client.ping()
                version = client.server_version
                if version is not None and version.release[:2] < MIN_REDIS:
                    raise BackplaneError(
                        f"the backplane at {self.address} is Redis {version}; multichat needs "
                        f"{'.'.join(map(str, MIN_REDIS))} or later"
                    )
                if self._password is not None:
                    await check_password(client, self._keys, self._password)
                await self._liveness.register(client)
            except START_ERRORS as exc:
                raise BackplaneError(
                    f"cannot use the backplane at {self.address}: {describe(exc)}"
                ) from None
        if scope.cancelled_caught:
            raise BackplaneError(f"cannot use the backplane at {self.address}: no answer")
        self._link.back(quiet=True)
        log.info("joined the backplane at %s as node %s", self.address, self.node_id)

    async def _retire(self, client: RedisClient) -> None:
        try:
            await self._writer.flush()
            left = await retire(
                client,
                self._keys,
                node=self.node_id,
                retention=self._retention,
                floors=self._floors,
            )
        except (*LINK_ERRORS, *REFUSALS) as exc:
            await unless_cancelled()
            self._not_retired(describe(exc))
        else:
            if left:
                log.info("%d members of this server left the backplane", left)

    def _not_retired(self, why: str) -> None:
        log.warning(
            "could not take this server's members out of the backplane (%s); the other servers "
            "will, once it has been silent for %.0f s",
            why,
            self._liveness.timeout,
        )

    async def _recover(self, lost_data: bool) -> None:
        """Redis answers again (or took this server for dead): check what it still holds of
        this server before anything else is sent (backplane_nodes.check_node)."""
        client = self._require_client()
        if lost_data and self._password is not None:
            try:
                await check_password(client, self._keys, self._password)  # it was lost too
            except BackplaneError as exc:
                log.error("%s", exc)
        lost = await check_node(
            client,
            self._keys,
            node=self.node_id,
            seats=self.seats.held(),
            # While the link is down the writer sends nothing, so a seat Redis has that this
            # server does not know is a join whose answer was lost, not one being made now.
            known=self.seats.tokens() if not self._link.up else None,
            reason=ABANDONED_REASON,
            retention=self._retention,
            floors=self._floors,
        )
        lost = self.seats.drop(lost)
        if lost:
            why = "Redis lost its data" if lost_data else "the backplane no longer has them"
            log.warning("%d members of this server must join again: %s", len(lost), why)
            self._on_seats_lost(lost)

    # -- reading the open rooms --

    async def open_room(self, room: str, *, history: int) -> RoomSnapshot:
        """Start reading `room` (its key): its newest `history` entries, members and topic now,
        then everything after them through `on_entries`. Raises BackplaneUnavailable."""
        keys = self._keys
        reply: object = await self._ask(
            lambda client: snapshot_script(
                keys=[keys.log(room), keys.meta(room), keys.members(room)],
                args=[str(history)],
                client=client,
            )
        )
        snapshot, expired = decode_snapshot(room, reply, time.time())
        if expired:
            await self._forget_expired(room, expired)
        self._writer.advance(room, snapshot.position)
        self._reader.watch(room, snapshot.position)
        return snapshot

    async def _forget_expired(self, room: str, expired: list[str]) -> None:
        """Delete the bans and mutes of `room` that have run out (fields and values, flat):
        every server skips them, but the meta hash would keep them for ever."""
        keys = self._keys
        try:
            await self._ask(
                lambda client: expired_script(keys=[keys.meta(room)], args=expired, client=client)
            )
        except BackplaneUnavailable as exc:
            log.info("room %r: expired bans and mutes stay in the backplane for now: %s", room, exc)

    def close_room(self, room: str) -> None:
        """Stop reading `room`."""
        self._reader.unwatch(room)

    # -- history --

    async def recent(self, room: str, limit: int) -> list[BackplaneEntry]:
        """The newest `limit` entries of `room`, oldest first."""
        log_key = self._keys.log(room)
        raw = await self._ask(lambda client: client.xrevrange(log_key, count=limit))
        return decode_stream(reversed(raw))[0]

    async def since(
        self, room: str, after: int, limit: int, *, before: str | None = None
    ) -> Replay:
        """What a member that saw message `after` missed: the entries after it (before the
        stream ID `before`, if given, where the caller's own log takes over), at most the
        newest `limit` messages with what came between them, oldest first."""
        if before is None:
            bound, upper = "", ""
        else:
            seq, sub = parse_id(before)
            bound, upper = before, str(seq if sub else seq - 1)
        keys = self._keys
        cap = limit + REPLAY_SLACK_ENTRIES
        reply: object = await self._ask(
            lambda client: since_script(
                keys=[keys.log(room), keys.meta(room)],
                args=[str(after), str(limit), str(cap), bound, upper],
                client=client,
            )
        )
        raw, newest = sequence(reply, 2)
        entries = decode_script_entries(raw)
        replayed = sum(e.is_message for e in entries)
        return Replay(entries, max(0, int(str(newest)) - after - replayed))

    async def members(self, room: str) -> list[RemoteMember]:
        """Everyone in `room`, on every server, in the order they joined."""
        members_key = self._keys.members(room)
        records = await self._ask(lambda client: client.hgetall(members_key))
        members = [decode_member(k, v) for k, v in records.items()]
        return sorted(members, key=member_order)

    # -- one-off questions --

    def _require_client(self) -> RedisClient:
        if self._client is None:
            raise RuntimeError("the backplane is not running")
        return self._client

    async def _ask(self, question: Callable[[RedisClient], Awaitable[T]]) -> T:
        """Ask Redis something outside the writer's order (reads); raises BackplaneUnavailable."""
        client = self._require_client()
        self._link.check()
        try:
            return await question(client)
        except LINK_ERRORS as exc:
            await unless_cancelled()
            self._link.lost(exc)
            raise BackplaneUnavailable(f"the backplane did not answer: {describe(exc)}") from None
        except REFUSALS as exc:
            raise BackplaneUnavailable(f"the backplane refused: {describe(exc)}") from None


__all__ = [
    "NODE_TIMEOUT_SECONDS",
    "Backplane",
    "BackplaneAddress",
    "BackplaneEntry",
    "BackplaneError",
    "BackplaneUnavailable",
    "NameTaken",
    "NotJoined",
    "Origin",
    "RemoteMember",
    "Replay",
    "RoomSnapshot",
    "Seat",
    "parse_address",
]
