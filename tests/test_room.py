"""The room without sockets: the log, cursors, batching of wake-ups, and who is too slow."""

from __future__ import annotations

from multichat.limits import Limits
from multichat.room import BUSY_APPENDS_PER_WINDOW, WRITE_BATCH_SECONDS, Member, Room


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_room(clock: Clock, timers: list[float]) -> Room:
    room = Room("r", limits=Limits(), clock=lambda: 0.0, monotonic=clock)
    room.flush_timer = timers.append
    return room


def join(room: Room, name: str, woken: list[str]) -> Member:
    return room.join(
        name,
        text=False,
        wake=lambda: woken.append(name),
        kick=lambda reason: None,
        welcome=lambda display, names: b"welcome\n",
    )


def test_a_quiet_room_wakes_writers_at_once() -> None:
    clock, timers, woken = Clock(), [], []
    room = make_room(clock, timers)
    alice = join(room, "alice", woken)
    bob = join(room, "bob", woken)
    room.take_nowait(alice)
    room.take_nowait(bob)
    room.park(alice)
    room.park(bob)
    woken.clear()
    clock.now += 1
    room.post(alice, "hi")
    assert sorted(woken) == ["alice", "bob"] and timers == []


def test_a_busy_room_wakes_writers_once_per_window() -> None:
    clock, timers, woken = Clock(), [], []
    room = make_room(clock, timers)
    alice = join(room, "alice", woken)
    for n in range(BUSY_APPENDS_PER_WINDOW + 1):  # a busy tenth of a second
        room.post(alice, f"m{n}")
        clock.now += 0.0005
    clock.now += 0.1  # the next window begins: the room counts as busy now
    room.take_nowait(alice)
    room.park(alice)
    woken.clear()
    room.post(alice, "first")
    room.take_nowait(alice)
    room.park(alice)
    woken.clear()
    room.post(alice, "second")  # within the batch window: no wake-up yet, a timer instead
    assert woken == [] and timers and timers[-1] <= clock.now + WRITE_BATCH_SECONDS
    clock.now = timers[-1]
    room.flush_nowait()
    assert woken == ["alice"]
    assert room.take_nowait(alice).count(b'"type":"message"') == 1


def test_presence_alone_does_not_wake_a_lazy_writer() -> None:
    clock, timers, woken = Clock(), [], []
    room = make_room(clock, timers)
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
    clock, timers, woken = Clock(), [], []
    room = make_room(clock, timers)
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
