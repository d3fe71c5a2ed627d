"""Backplane nodes for the tests: in this process (`running`), or as a process of their own
that a test can SIGKILL or SIGSTOP like a server (`python tests/backplanenode.py ...`).

The process joins its members, prints `ready` on stdout, then a line for each event:
`lost NAME ...` when the backplane tells it its members must join again.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from multichat.server.backplane import (
    Backplane,
    BackplaneEntry,
    BackplaneError,
    Seat,
    parse_address,
)


class Recorder:
    """An `on_entries` that keeps what each room delivered, and lets a test wait for more."""

    def __init__(self) -> None:
        self.entries: dict[str, list[BackplaneEntry]] = defaultdict(list)
        self.batches = 0
        self._changed = trio.Event()

    def __call__(self, room: str, entries: Sequence[BackplaneEntry]) -> None:
        self.entries[room].extend(entries)
        self.batches += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, room: str, done: Callable[[list[BackplaneEntry]], bool]) -> None:
        while not done(self.entries[room]):
            await self._changed.wait()

    def texts(self, room: str) -> list[str]:
        return [e.entry.text for e in self.entries[room]]


class Node:
    """A running backplane, what it delivered, and the seats it was told it lost."""

    def __init__(self, backplane: Backplane, recorder: Recorder) -> None:
        self.backplane = backplane
        self.recorder = recorder
        self.lost: list[Seat] = []
        self.availability: list[bool] = []
        self.changed = trio.Event()  # set (and replaced) when Redis goes or comes back, or
        # seats are lost

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_available(self, up: bool) -> None:
        while self.backplane.available != up:
            await self.changed.wait()

    async def wait_lost(self, count: int) -> None:
        while len(self.lost) < count:
            await self.changed.wait()


@asynccontextmanager
async def running(url: str, namespace: str, **options: Any) -> AsyncIterator[Node]:
    """A backplane node on `url`, in `namespace`, running until the block ends."""
    recorder = Recorder()
    node: Node | None = None

    def lost(seats: list[Seat]) -> None:
        assert node is not None
        node.lost += seats
        node._changed()

    def availability(up: bool) -> None:
        assert node is not None
        node.availability.append(up)
        node._changed()

    backplane = Backplane(
        parse_address(url),
        on_entries=recorder,
        on_seats_lost=lost,
        on_availability=availability,
        namespace=namespace,
        **options,
    )
    node = Node(backplane, recorder)
    failure: BackplaneError | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(backplane.run)
        except BackplaneError as exc:
            failure = exc  # raised in here, it would reach the test in an ExceptionGroup
        else:
            yield node
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _serve(args: argparse.Namespace) -> None:
    def lost(seats: list[Seat]) -> None:
        print("lost", *sorted(seat.name for seat in seats), flush=True)

    backplane = Backplane(
        parse_address(args.url),
        on_entries=lambda room, entries: None,
        on_seats_lost=lost,
        namespace=args.namespace,
        node_timeout=args.node_timeout,
        node_id=args.node_id,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        for member in args.members:
            room, name = member.split("/", 1)
            await backplane.open_room(room, history=0)
            await backplane.seats.join(room, name)
        print("ready", flush=True)
        await trio.sleep_forever()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="server process: %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("namespace")
    parser.add_argument("--node-timeout", type=float, required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("members", nargs="*", help="ROOM/NAME")
    trio.run(_serve, parser.parse_args())


if __name__ == "__main__":
    main()
