"""The servers of a backplane: joining it, staying alive in it, and the end of the ones that die.

Each server is a node, named by a random id. It joins by checking the password against the
one the first server left in Redis (a slow salted digest: whoever reads Redis learns nothing
cheaply). It then beats every `node_timeout / 3` in `NS:nodes`, in Redis's own time, so servers
whose clocks differ still agree on who is silent. Every server looks for nodes silent for
`node_timeout` at each beat, and makes each of their members leave, saying "server lost": the
X operation of the APPLY script deletes the seat and appends the leave in one step, and only
while the node is still silent, so with any number of survivors each member leaves once, and a
node that was only slow is not reaped after it beat again.

The beat also tells a node what happened while it could not see: that it was reaped (its
record was gone), or that Redis lost its data (the epoch changed). Either way the backplane
checks its seats (`Liveness.recover`) before saying Redis is back.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import trio
from coredis.tokens import PureToken

from .backplane_codec import Keys, Origin, Seat, decode_seat, encode_fields
from .backplane_errors import BackplaneError
from .backplane_link import (
    LINK_ERRORS,
    REFUSALS,
    Backoff,
    Link,
    RedisClient,
    unless_cancelled,
)
from .backplane_scripts import beat_script, dead_script, forget_script
from .backplane_writer import MAX_BATCH, Op, apply_ops
from .history_entries import LEAVE, StoredEntry

log = logging.getLogger("multichat.backplane")

# What the others see when a server's members are reaped, and when it stops cleanly.
LOST_REASON = "server lost"
CLOSED_REASON = "server closed"
# scrypt at N=2**14, r=8 (the cost Python's docs and RFC 7914 take as interactive): about
# 50 ms once per server start, which makes a guess at the password from a copy of Redis slow.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


async def check_password(client: RedisClient, keys: Keys, password: str) -> None:
    """Keep the digest of `password` in Redis if none is there; raise BackplaneError if the one
    there is another password's: every server of a backplane serves the same rooms, so they
    must let in the same people."""
    stored = await client.hgetall(keys.password)
    if not stored:
        salt = secrets.token_hex(16)
        digest = await trio.to_thread.run_sync(_digest, password, salt)
        await client.hsetnx(keys.password, "digest", f"scrypt:{salt}:{digest}")
        stored = await client.hgetall(keys.password)
    try:
        method, salt, digest = stored["digest"].split(":")
    except (KeyError, ValueError):
        raise BackplaneError(f"the password record {keys.password} in Redis is damaged") from None
    if method != "scrypt":
        raise BackplaneError(f"the password record {keys.password} is from a newer multichat")
    mine = await trio.to_thread.run_sync(_digest, password, salt)
    if not hmac.compare_digest(mine, digest):
        raise BackplaneError(
            "the other servers on this backplane use another room password; start every "
            "server of a backplane with the same one"
        )


def _digest(password: str, salt: str) -> str:
    data = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=bytes.fromhex(salt), **_SCRYPT).hex()


async def ensure_epoch(client: RedisClient, keys: Keys) -> str:
    """The data epoch: set once by the first server, gone only if Redis lost its data."""
    await client.set(keys.epoch, secrets.token_hex(8), condition=PureToken.NX)
    epoch = await client.get(keys.epoch)
    if epoch is None:
        raise BackplaneError(f"Redis does not keep {keys.epoch}: is it read-only?")
    return epoch


async def seats_of(client: RedisClient, keys: Keys, node: str) -> list[Seat]:
    """Every seat `node` holds (its members, in every room)."""
    records = await client.hgetall(keys.seats(node))
    return [decode_seat(token, value) for token, value in records.items()]


async def leave_all(
    client: RedisClient,
    keys: Keys,
    *,
    node: str,
    by: str,
    seats: list[Seat],
    reason: str,
    retention: int,
    floors: dict[str, tuple[int, int]],
    silent_ms: int | None,
) -> int:
    """Make `node`'s `seats` leave, saying `reason`, as `by`; with `silent_ms`, only while the
    node has been silent that long (reaping). How many left (others may have been first)."""
    left = 0
    now = time.time()
    for start in range(0, len(seats), MAX_BATCH):
        ops = [
            Op(
                "L" if silent_ms is None else "X",
                seat.room,
                key=seat.key,
                token=seat.token,
                arg1="" if silent_ms is None else str(silent_ms),
                fields=encode_fields(
                    StoredEntry(0, now, LEAVE, seat.name, reason), Origin(by, seat.token)
                ),
            )
            for seat in seats[start : start + MAX_BATCH]
        ]
        outcomes = await apply_ops(
            client, ops, node=node, keys=keys, retention=retention, floors=floors
        )
        left += sum(status == "ok" for status, _, _ in outcomes)
    return left


async def check_node(
    client: RedisClient,
    keys: Keys,
    *,
    node: str,
    seats: list[Seat],
    known: set[str] | None,
    reason: str,
    retention: int,
    floors: dict[str, tuple[int, int]],
) -> list[Seat]:
    """What Redis still holds of `node`, after the node could not see for a while: each room's
    numbering is carried on from `floors` (Redis may have lost the newest), and the `seats`
    that no longer hold their names are returned (Redis lost them, or others reaped them).
    With `known` (the tokens the node knows of), the seats Redis has beyond them leave,
    saying `reason`."""
    rooms = list(floors)
    for start in range(0, len(rooms), MAX_BATCH):
        ops = [Op("A", room) for room in rooms[start : start + MAX_BATCH]]
        await apply_ops(client, ops, node=node, keys=keys, retention=retention, floors=floors)
    lost: list[Seat] = []
    for start in range(0, len(seats), MAX_BATCH):
        chunk = seats[start : start + MAX_BATCH]
        ops = [Op("C", seat.room, key=seat.key, token=seat.token) for seat in chunk]
        outcomes = await apply_ops(
            client, ops, node=node, keys=keys, retention=retention, floors=floors
        )
        lost += [
            seat for seat, (status, _, _) in zip(chunk, outcomes, strict=True) if status != "ok"
        ]
    if known is not None:
        held = await seats_of(client, keys, node)
        strays = [seat for seat in held if seat.token not in known]
        if strays:
            await leave_all(
                client,
                keys,
                node=node,
                by=node,
                seats=strays,
                reason=reason,
                retention=retention,
                floors=floors,
                silent_ms=None,
            )
    return lost


class Liveness:
    """This node's beat, and the reaping of silent nodes. Run it with `nursery.start(liveness
    .run, client)` once the node is registered (`register`)."""

    def __init__(
        self,
        link: Link,
        *,
        node: str,
        keys: Keys,
        timeout: float,
        retention: int,
        floors: dict[str, tuple[int, int]],
        recover: Callable[[bool], Awaitable[None]],
        seats_held: Callable[[], int],
    ) -> None:
        self.link = link
        self.node = node
        self.keys = keys
        self.timeout = timeout
        self.retention = retention
        self.floors = floors
        # Checks what Redis still holds of this node (its seats, the rooms' numbering) before
        # the link is said to be up again; called with whether Redis lost its data.
        self.recover = recover
        # How many seats this node holds as far as it knows: Redis holding fewer means others
        # took it for dead (it may have beaten again before they forgot it, so `new` is not
        # enough to tell).
        self.seats_held = seats_held
        self.epoch = ""
        self._poke = trio.Event()

    @property
    def interval(self) -> float:
        return self.timeout / 3

    async def register(self, client: RedisClient) -> None:
        """The first beat, at start; raises what coredis raises."""
        self.epoch = await ensure_epoch(client, self.keys)
        await beat_script(
            keys=[self.keys.nodes, self.keys.epoch, self.keys.seats(self.node)],
            args=[self.node],
            client=client,
        )

    def poke(self) -> None:
        """Something answered: check now whether Redis is back, rather than at the next beat."""
        self._poke.set()

    async def run(
        self, client: RedisClient, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        backoff = Backoff()
        while True:
            with trio.move_on_after(self.interval if self.link.up else backoff.next()):
                await self._poke.wait()
            self._poke = trio.Event()
            try:
                await self._beat(client)
                await self._reap(client)
            except (*LINK_ERRORS, *REFUSALS) as exc:
                await unless_cancelled()
                self.link.lost(exc)
            else:
                backoff.reset()

    async def _beat(self, client: RedisClient) -> None:
        reply: object = await beat_script(
            keys=[self.keys.nodes, self.keys.epoch, self.keys.seats(self.node)],
            args=[self.node],
            client=client,
        )
        if not isinstance(reply, list) or len(reply) != 3 or not isinstance(reply[2], int):
            raise TypeError(f"BEAT answered {reply!r}")
        new, epoch, held = reply
        lost_data = epoch != self.epoch
        # A join or leave on its way makes the counts differ for a moment: then the seats are
        # checked for nothing, which costs one script.
        reaped = bool(new) or held < self.seats_held()
        if lost_data:
            log.error(
                "the backplane's Redis lost its data (restarted without its append-only file?): "
                "what it held is gone; members of this server are asked to join again"
            )
            self.epoch = await ensure_epoch(client, self.keys)
        elif new and self.link.up:
            log.warning("this server was taken for dead by the backplane (silent too long)")
        if lost_data or reaped or not self.link.up:
            await self.recover(lost_data)
            self.link.back()

    async def _reap(self, client: RedisClient) -> None:
        timeout_ms = int(self.timeout * 1000)
        dead: object = await dead_script(
            keys=[self.keys.nodes], args=[str(timeout_ms), self.node], client=client
        )
        for node in dead if isinstance(dead, list) else []:
            if not isinstance(node, str):
                continue
            seats = await seats_of(client, self.keys, node)
            left = await leave_all(
                client,
                self.keys,
                node=node,
                by=self.node,
                seats=seats,
                reason=LOST_REASON,
                retention=self.retention,
                floors=self.floors,
                silent_ms=timeout_ms,
            )
            if await forget_script(
                keys=[self.keys.nodes, self.keys.seats(node)],
                args=[node, str(timeout_ms)],
                client=client,
            ):
                log.info(
                    "server %s went silent: %d of its members left (%s)", node, left, LOST_REASON
                )


async def retire(
    client: RedisClient,
    keys: Keys,
    *,
    node: str,
    retention: int,
    floors: dict[str, tuple[int, int]],
) -> int:
    """This node stops cleanly: its members leave now (CLOSED_REASON), not at the next reap,
    and it is forgotten. How many left."""
    seats = await seats_of(client, keys, node)
    left = await leave_all(
        client,
        keys,
        node=node,
        by=node,
        seats=seats,
        reason=CLOSED_REASON,
        retention=retention,
        floors=floors,
        silent_ms=None,
    )
    await client.hdel(keys.nodes, [node])
    return left
