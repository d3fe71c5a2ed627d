"""The room without sockets: the log, cursors, lazy wake-ups, and who is too slow."""

from __future__ import annotations

from multichat.limits import Limits
from multichat.room import Member, Room


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_room(clock: Clock) -> Room:
    return Room("r", limits=Limits(), clock=lambda: 0.0, monotonic=clock)


def join(room: Room, name: str, woken: list[str]) -> Member:
    return room.join(
        name,
        text=False,
        wake=lambda: woken.append(name),
        kick=lambda reason: None,
        welcome=lambda display, names: b"welcome\n",
    )


def test_a_quiet_room_wakes_writers_at_once() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    alice = join(room, "alice", woken)
    bob = join(room, "bob", woken)
    room.take_nowait(alice)
    room.take_nowait(bob)
    room.park(alice)
    room.park(bob)
    woken.clear()
    clock.now += 1
    room.post(alice, "hi")
    assert sorted(woken) == ["alice", "bob"]


def test_presence_alone_does_not_wake_a_lazy_writer() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    alice = join(room, "alice", woken)
    room.take_nowait(alice)
    room.park(alice, lazy=True)
    woken.clear()
    clock.now += 1
    join(room, "bob", [])
    assert woken == []
    clock.now += 1
    room.post(alice, "a real message")
    assert woken == ["alice"]


def test_only_a_stuck_writer_is_too_slow() -> None:
    clock, woken = Clock(), []
    room = make_room(clock)
    kicked: list[str] = []
    alice = join(room, "alice", woken)
    slow = room.join(
        "slow",
        text=False,
        wake=lambda: None,
        kick=kicked.append,
        welcome=lambda display, names: b"welcome\n",
    )
    big = "x" * 3000
    for _ in range(60):  # 180 KB: over the outbox, but slow's writer is not stuck yet
        room.post(alice, big)
        room.take_nowait(alice)
    assert slow in room and kicked == []
    slow.sending = clock.now  # its writer is now in a send the kernel does not finish
    clock.now += 1
    room.sweep_nowait()
    assert slow not in room and kicked and kicked[0].startswith("too slow")
