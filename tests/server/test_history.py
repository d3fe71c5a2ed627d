"""History on disk: the SQLite store, the writer that feeds it from trio, and retention.

Every test uses a real SQLite file in tmp_path, and the writer's tests the real history process
(history_process.py). A full disk is the kernel refusing that process's writes past a file size
limit; durability is proven by killing a writing process with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest

if sys.platform != "win32":
    import resource
import trio
import trio.testing

from multichat.protocol.events import (
    BanEntry,
    CameBack,
    Join,
    Leave,
    Message,
    Notice,
    Renamed,
    Shutdown,
    Topic,
    WentAway,
)
from multichat.server import history, history_entries, history_file, history_writer
from multichat.server.history import SCHEMA_VERSION, HistoryError, HistoryStore
from multichat.server.history_entries import HistoryEvent, StoredEntry
from multichat.server.history_process import HistoryProcess
from multichat.server.history_settings import (
    HistorySettings,
    HistorySettingsError,
    load_history_settings,
)
from multichat.server.history_writer import HistoryWriter, prune_periodically
from multichat.server.limits import Limits, load_limits

DAY = 86_400.0
NOW = 1_750_000_000.0


def say(
    seq: int, text: str = "hi", sender: str = "alice", *, to: str | None = None, ts: float = NOW
) -> StoredEntry:
    return StoredEntry(seq, ts, history_entries.MESSAGE, sender, text, to)


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def store(db: Path) -> HistoryStore:
    return HistoryStore.open(db)


@pytest.fixture
async def process() -> AsyncIterator[HistoryProcess]:
    """The history's process, running as the server runs it: it outlives the test's writers."""
    process = HistoryProcess()
    async with trio.open_nursery() as nursery:
        await nursery.start(process.run)
        yield process
        process.close_nowait()


# -- the file --


def test_a_new_file_is_private_in_wal_mode_and_carries_its_schema_version(db: Path) -> None:
    store = HistoryStore.open(db)
    store.append([say(1)])
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    other = sqlite3.connect(db)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    other.close()
    store.close()


def test_every_room_event_round_trips_through_the_file(store: HistoryStore, db: Path) -> None:
    # Numbered as the room's log numbers them: a message its own seq, the rest the newest
    # message's before them.
    events: list[tuple[int, HistoryEvent]] = [
        (0, Join("alice", NOW)),
        (1, Message(1, NOW + 1, "alice", "hello\nworld")),
        (2, Message(2, NOW + 2, "alice", "waves", action=True)),
        (3, Message(3, NOW + 3, "alice", "psst", to="bob")),
        (3, Renamed("alice", "alicia", NOW + 4)),
        (3, Topic("plans for saturday", "alicia")),
        (3, Notice("host banned mallory (1.2.3.4)", NOW + 6)),
        (3, WentAway("alicia", "lunch")),
        (3, CameBack("alicia")),
        (3, Leave("alicia", "quit", NOW + 9)),
    ]
    later = NOW + 100  # what the room would pass: its clock now
    entries = [StoredEntry.from_event(event, seq=seq, ts=later) for seq, event in events]
    # An event's own time wins; the events without one take the time given.
    given = [NOW + i for i in (0, 1, 2, 3, 4, 100, 6, 100, 100, 9)]
    assert [e.ts for e in entries] == given
    store.append(entries)
    store.close()
    reopened = HistoryStore.open(db)
    back = reopened.recent(100, for_name="bob")
    assert back == entries
    assert [entry.to_event() for entry in back] == [event for _, event in events]
    reopened.close()


def test_a_message_keeps_its_own_seq_and_time_and_other_events_need_one() -> None:
    entry = StoredEntry.from_event(Message(7, NOW, "alice", "hi"))
    assert (entry.seq, entry.ts) == (7, NOW)
    # The room's own path for messages: numbered by its log entry, with the same fields.
    waves = Message(7, NOW, "alice", "waves", to="bob", action=True)
    assert StoredEntry.of_message(waves, 9) == StoredEntry.from_event(waves, seq=9)
    assert StoredEntry.of_message(waves, 9) == (
        9,
        NOW,
        "message",
        "alice",
        "waves",
        "bob",
        {"action": True},
    )
    with pytest.raises(ValueError, match="seq"):
        StoredEntry.from_event(Join("alice", NOW))
    with pytest.raises(ValueError, match="ts"):
        StoredEntry.from_event(Topic("t", "alice"), seq=1)
    with pytest.raises(TypeError, match="Shutdown"):
        StoredEntry.from_event(Shutdown("bye"), seq=1, ts=NOW)  # type: ignore[arg-type]
    unknown = StoredEntry(1, NOW, "poll", "alice", "lunch?")
    assert unknown.to_event() is None


def test_garbage_in_place_of_the_file_is_refused_in_one_line_and_left_alone(db: Path) -> None:
    garbage = os.urandom(8192)
    db.write_bytes(garbage)
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(db)
    assert "damaged" in one_line(caught.value) and str(db) in str(caught.value)
    assert db.read_bytes() == garbage


def test_a_damaged_page_is_found_at_open_and_the_file_left_alone(
    store: HistoryStore, db: Path
) -> None:
    store.append([say(seq, "x" * 500) for seq in range(1, 200)])
    store.close()  # folds the WAL into the file
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[3 * page : 5 * page] = os.urandom(2 * page)
    db.write_bytes(bytes(data))
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(db)
    assert "damaged" in one_line(caught.value)
    assert db.read_bytes() == bytes(data)


def test_an_sqlite_file_that_is_not_ours_is_refused(db: Path) -> None:
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE photos (id INTEGER)")
    other.commit()
    other.close()
    before = db.read_bytes()
    with pytest.raises(HistoryError, match="not a multichat history") as caught:
        HistoryStore.open(db)
    one_line(caught.value)
    assert db.read_bytes() == before


def test_a_file_from_a_newer_schema_is_refused_and_not_rewritten(
    store: HistoryStore, db: Path
) -> None:
    store.append([say(1)])
    store.close()
    newer = sqlite3.connect(db)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.commit()
    newer.close()
    before = db.read_bytes()
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(db)
    assert "newer multichat" in one_line(caught.value)
    with pytest.raises(HistoryError, match="newer multichat"):
        HistoryStore.open(db, read_only=True)
    assert db.read_bytes() == before


def test_a_file_another_program_holds_locked_is_refused(
    store: HistoryStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append([say(1)])
    store.close()
    monkeypatch.setattr(history_file, "BUSY_SECONDS", 0.1)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(HistoryError) as caught:
            HistoryStore.open(db)
        assert "locked" in one_line(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_directory_that_cannot_hold_the_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(tmp_path / "missing" / "history.sqlite3")
    assert "cannot create" in one_line(caught.value)
    with pytest.raises(HistoryError, match="not a regular file"):
        HistoryStore.open(tmp_path)


def test_a_read_only_store_sees_commits_and_writes_nothing(store: HistoryStore, db: Path) -> None:
    with pytest.raises(HistoryError, match="no history file"):
        HistoryStore.open(db.with_name("other.sqlite3"), read_only=True)
    reader = HistoryStore.open(db, read_only=True)
    assert reader.recent(10) == []
    store.append([say(1), say(2)])
    assert [e.seq for e in reader.recent(10)] == [1, 2]
    with pytest.raises(HistoryError, match="read-only"):
        reader.append([say(3)])
    reader.close()
    store.close()


def test_a_commit_never_checkpoints_and_sync_does(store: HistoryStore, db: Path) -> None:
    # A checkpoint fsyncs: in a commit, it would hold that commit's echoes back. SQLite's own
    # would run once the WAL reaches 1,000 pages, well before 1,500 commits of a page or more.
    store.append([say(1)])
    store.sync()
    size = db.stat().st_size
    for seq in range(2, 1_502):
        store.append([say(seq, "x" * 500)])
    assert db.stat().st_size == size  # every commit only in the WAL
    store.sync()
    assert db.stat().st_size > size + 1_500 * 500
    assert store.last_seq() == 1_501
    store.close()


def test_a_seq_stored_twice_rolls_back_the_whole_transaction(store: HistoryStore) -> None:
    store.append([say(1)])
    with pytest.raises(HistoryError) as caught:
        store.append([say(2), say(1)])
    one_line(caught.value)
    assert [e.seq for e in store.recent(10)] == [1]
    assert store.last_seq() == 1


def test_a_commit_made_again_leaves_out_what_is_stored_already(store: HistoryStore) -> None:
    """The retry of a commit whose process died after committing, before it answered."""
    store.append([say(1), presence(1), say(2)])
    store.append([say(1), presence(1), say(2), presence(2), say(3)], again=True)
    assert [(e.seq, e.type) for e in store.recent(10)] == [
        (1, "message"),
        (1, "join"),
        (2, "message"),
        (2, "join"),
        (3, "message"),
    ]
    with pytest.raises(HistoryError):  # not made again: a message stored twice is refused
        store.append([say(3)])


# -- reading it back --


def test_recent_gives_the_newest_oldest_first_and_private_ones_to_their_parties(
    store: HistoryStore,
) -> None:
    store.append(
        [
            say(1, "one"),
            say(2, "for bob", to="Bob"),
            say(3, "three", sender="carol"),
            say(4, "from bob", sender="bob", to="alice"),
            say(5, "five"),
        ]
    )
    assert [e.text for e in store.recent(2)] == ["three", "five"]
    assert [e.seq for e in store.recent(10)] == [1, 3, 5]
    # Parties are matched as names compare in the room: case and width do not matter.
    assert [e.seq for e in store.recent(10, for_name="BOB")] == [1, 2, 3, 4, 5]
    assert [e.seq for e in store.recent(3, for_name="Alice")] == [3, 4, 5]
    assert [e.seq for e in store.recent(10, for_name="carol")] == [1, 3, 5]
    entry = store.recent(10, for_name="bob")[1]
    assert entry.visible_to("BOB") and entry.visible_to("alice") and not entry.visible_to("carol")


def test_since_gives_the_newest_it_may_show_and_counts_the_rest(store: HistoryStore) -> None:
    store.append([say(seq, to="bob" if seq % 3 == 0 else None) for seq in range(1, 21)])
    # After seq 5: 6..20 is 15 entries, 5 of them private to bob (9, 12, 15, 18 and 6).
    missed, entries = store.since(5, 4)
    assert [e.seq for e in entries] == [16, 17, 19, 20]
    assert missed == 10 - 4
    missed, entries = store.since(5, 4, for_name="bob")
    assert [e.seq for e in entries] == [17, 18, 19, 20]
    assert missed == 15 - 4
    assert store.since(5, 100, for_name="bob") == (0, store.recent(15, for_name="bob"))
    assert store.since(20, 10) == (0, [])
    assert store.since(99, 10) == (0, [])


def test_since_replays_after_a_message_as_the_room_numbers_its_log(store: HistoryStore) -> None:
    # Only messages have a seq of their own; the rest carry the newest message's before them.
    store.append(
        [
            presence(0, "alice"),
            say(1, "one"),
            presence(1, "bob"),
            say(2, "two"),
            say(3, "psst", to="bob"),
            presence(3, "carol", history_entries.LEAVE),
            say(4, "four"),
            presence(4, "dave"),
        ]
    )

    def seen(missed_entries: tuple[int, list[StoredEntry]]) -> tuple[int, list[str]]:
        missed, entries = missed_entries
        return missed, [e.text or f"{e.type} {e.sender}" for e in entries]

    assert seen(store.since(1, 10)) == (0, ["join bob", "two", "leave carol", "four", "join dave"])
    assert seen(store.since(1, 10, for_name="bob")) == (
        0,
        ["join bob", "two", "psst", "leave carol", "four", "join dave"],
    )
    # At most `limit` messages, with what came among and after them; the count is of messages.
    assert seen(store.since(1, 1)) == (1, ["leave carol", "four", "join dave"])
    assert seen(store.since(1, 1, for_name="bob")) == (2, ["leave carol", "four", "join dave"])
    assert seen(store.since(1, 0)) == (2, ["join dave"])
    assert seen(store.since(3, 10)) == (0, ["leave carol", "four", "join dave"])
    assert seen(store.since(4, 10)) == (0, ["join dave"])
    assert seen(store.since(0, 10))[1][:2] == ["join alice", "one"]  # from the very start


def test_since_counts_pruned_entries_as_missed(store: HistoryStore) -> None:
    store.append([say(seq, ts=NOW + seq) for seq in range(1, 11)])
    assert store.prune(0, 4, now=NOW) == 6
    missed, entries = store.since(2, 2)
    # 3..6 were pruned (4 entries), 7 and 8 are left out by the limit.
    assert [e.seq for e in entries] == [9, 10]
    assert missed == 4 + 2
    assert store.since(8, 10) == (0, entries)


def test_entries_pages_through_everything_from_a_time(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "READ_PAGE", 3)
    store.append([say(seq, ts=NOW + seq, to="bob" if seq == 5 else None) for seq in range(1, 11)])
    assert [e.seq for e in store.entries()] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert [e.seq for e in store.entries(include_private=True)] == list(range(1, 11))
    assert [e.seq for e in store.entries(since_ts=NOW + 7)] == [7, 8, 9, 10]


# -- last seq, bans, retention --


def test_last_seq_carries_on_after_a_restart_and_a_prune(store: HistoryStore, db: Path) -> None:
    assert store.last_seq() == 0
    store.append([say(1), say(2)], last_seq=5)
    assert store.last_seq() == 5
    store.append([say(9)])
    store.prune(0, 1, now=NOW)
    store.close()
    reopened = HistoryStore.open(db)
    assert reopened.last_seq() == 9
    assert [e.seq for e in reopened.recent(10)] == [9]
    reopened.close()


def test_bans_outlive_a_restart_in_the_order_they_were_set(store: HistoryStore, db: Path) -> None:
    forever = BanEntry("10.0.0.1", "mallory", None, "spam", "host")
    brief = BanEntry("10.0.0.2", "", NOW + 60, "", "alice")
    again = BanEntry("10.0.0.3", "eve", None, "", "host")
    store.add_ban(forever, now=NOW)
    store.append([], bans=[(brief, brief.address), (again, again.address)], now=NOW + 1)
    store.add_ban(forever, now=NOW + 2)  # set again: now the newest
    store.close()
    reopened = HistoryStore.open(db)
    assert reopened.bans(now=NOW) == [brief, again, forever]
    assert reopened.bans(now=NOW + 61) == [again, forever]
    assert reopened.remove_ban("10.0.0.3") is True
    assert reopened.remove_ban("10.0.0.3") is False
    reopened.append([], bans=[(None, "10.0.0.1")])
    assert reopened.bans(now=NOW) == [brief]
    reopened.prune(0, 0, now=NOW + 61)  # expired bans go with retention
    assert reopened.bans(now=0) == []
    reopened.close()


def test_prune_keeps_the_newest_entries_and_the_recent_days(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "PRUNE_BATCH", 7)
    store.append([say(seq, ts=NOW - (100 - seq) * DAY) for seq in range(1, 101)])
    assert store.prune(0, 0, now=NOW) == 0  # no bound of either kind
    assert store.prune(30, 0, now=NOW) == 69  # older than 30 days: seq 1..69 (70 is 30 days)
    assert [e.seq for e in store.recent(1000)] == list(range(70, 101))
    assert store.prune(0, 10, now=NOW) == 21
    assert [e.seq for e in store.recent(1000)] == list(range(91, 101))
    assert store.prune(2.5, 10, now=NOW) == 7  # both bounds: the stricter one wins
    assert [e.seq for e in store.recent(1000)] == [98, 99, 100]


def test_an_in_memory_store_keeps_nothing_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = HistoryStore.in_memory()
    store.append([say(1), say(2, to="bob")])
    store.sync()
    assert [e.seq for e in store.recent(5, for_name="bob")] == [1, 2]
    assert store.last_seq() == 2
    store.close()
    assert list(tmp_path.iterdir()) == []


# -- the writer --


async def test_everything_queued_during_a_commit_goes_in_the_next_one(
    db: Path, process: HistoryProcess
) -> None:
    store = HistoryStore.open(db)
    commits: list[int] = []
    writer = HistoryWriter(store, process, on_flushed=commits.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(10):
            # What is appended in one turn of the loop goes in one commit.
            for seq in range(1, 51):
                writer.append_nowait(say(seq))
            await writer.flush()
            assert commits == [50]
            # Another connection holds the file: the next commit waits for it.
            holder = sqlite3.connect(db, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            writer.append_nowait(say(51))
            await trio.testing.wait_all_tasks_blocked()  # ... and is in the process's hands
            for seq in range(52, 60):
                writer.append_nowait(say(seq))
            holder.execute("COMMIT")
            holder.close()
            await writer.flush()
        nursery.cancel_scope.cancel()
    assert commits == [50, 1, 8]
    assert [e.seq for e in store.recent(100)] == list(range(1, 60))


async def test_the_process_starts_when_asked_and_stops_when_closed(
    process: HistoryProcess,
) -> None:
    """A room with history starts it as it opens: its first echo waits for no interpreter."""
    assert process.pid is None
    with trio.fail_after(10):
        await process.start()
        first = process.pid
        assert first is not None
        await process.start()  # ready already: the same one
        assert process.pid == first
        process.close_nowait()
        # Polled: nothing waits for the child's end but `run` itself.
        while process.pid is not None:  # noqa: ASYNC110
            await trio.sleep(0.01)
    with pytest.raises(trio.ClosedResourceError):
        process.commit_nowait("x", [], last_seq=0, bans=[], again=False, on_done=print)
    with pytest.raises(trio.ClosedResourceError):
        await process.start()


@pytest.mark.parametrize(
    ("how", "complaint"),
    [
        ("missing", "cannot start the history's process: [Errno 2]"),
        # An interpreter whose standard library is not where it looks: it exits at once.
        ("broken", "the history's process ended as it started (exit status 1)"),
    ],
)
async def test_a_process_that_cannot_start_is_one_line_and_not_retried_in_a_loop(
    process: HistoryProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    complaint: str,
) -> None:
    if how == "missing":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    else:
        monkeypatch.setenv("PYTHONHOME", str(tmp_path))
    with trio.fail_after(10), pytest.raises(HistoryError) as raised:
        await process.start()
    assert complaint in one_line(raised.value)
    await trio.testing.wait_all_tasks_blocked()
    assert process.pid is None


def test_a_history_kept_in_memory_has_no_writer() -> None:
    """The process writes a file; a store in memory is only the test's own."""
    with pytest.raises(ValueError, match="in memory"):
        HistoryWriter(HistoryStore.in_memory(), HistoryProcess())


async def test_on_done_runs_in_order_in_trios_thread_after_the_commit(
    db: Path, process: HistoryProcess
) -> None:
    store = HistoryStore.open(db)
    reader = HistoryStore.open(db, read_only=True)
    writer = HistoryWriter(store, process)
    trio_thread = threading.get_ident()
    done: list[tuple[int, bool]] = []

    def on_done(seq: int, saved: bool) -> None:
        assert threading.get_ident() == trio_thread
        # Committed, so another connection (another process, after kill -9) sees it.
        assert reader.recent(1)[-1].seq >= seq
        done.append((seq, saved))

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(10):
            for seq in range(1, 31):
                writer.append_nowait(say(seq), partial(on_done, seq))
                if seq % 7 == 0:
                    await trio.sleep(0.01)
            await writer.flush()
        nursery.cancel_scope.cancel()
    assert done == [(seq, True) for seq in range(1, 31)]
    reader.close()
    store.close()


def presence(seq: int, name: str = "bob", kind: str = history_entries.JOIN) -> StoredEntry:
    """A join (or leave) as the room's log numbers it: the newest message's seq."""
    return StoredEntry(seq, NOW, kind, name)


async def test_seqs_never_go_back_across_restarts_and_a_stopped_writer_takes_nothing(
    store: HistoryStore, process: HistoryProcess
) -> None:
    store.append([say(1), say(2)], last_seq=7)
    writer = HistoryWriter(store, process)
    assert writer.last_seq == 7
    with pytest.raises(ValueError, match="needs a new one"):
        writer.append_nowait(say(7))
    with pytest.raises(ValueError):
        writer.append_nowait(presence(6))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.append_nowait(presence(7))  # a join after message 7 carries its number
        writer.append_nowait(say(8))
        writer.append_nowait(presence(8, kind=history_entries.LEAVE))
        writer.append_nowait(presence(8))
        with pytest.raises(ValueError):
            writer.append_nowait(say(8))
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.ClosedResourceError):
        writer.append_nowait(say(9))
    with pytest.raises(trio.ClosedResourceError):
        writer.set_ban_nowait(None, "10.0.0.1")
    assert store.last_seq() == 8
    assert [(e.seq, e.type) for e in store.recent(10)] == [
        (1, "message"),
        (2, "message"),
        (7, "join"),
        (8, "message"),
        (8, "leave"),
        (8, "join"),
    ]


async def test_what_is_queued_as_the_writer_is_cancelled_is_still_committed(
    store: HistoryStore, process: HistoryProcess
) -> None:
    writer = HistoryWriter(store, process)
    done: list[bool] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        # The room shuts down, and its last entries (leaves) come after the cancel.
        nursery.cancel_scope.cancel()
        for seq in range(1, 6):
            writer.append_nowait(say(seq), done.append)
        writer.set_ban_nowait(BanEntry("10.0.0.9", "", None, "", "host"), "10.0.0.9")
    assert done == [True] * 5
    assert [e.seq for e in store.recent(10)] == [1, 2, 3, 4, 5]
    assert [b.address for b in store.bans()] == ["10.0.0.9"]


async def test_bans_go_through_the_writer(store: HistoryStore, process: HistoryProcess) -> None:
    writer = HistoryWriter(store, process)
    ban = BanEntry("10.0.0.1", "mallory", None, "spam", "host")
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(10):
            writer.set_ban_nowait(ban, ban.address)
            await writer.flush()
            assert store.bans() == [ban]
            writer.set_ban_nowait(ban, ban.address)
            writer.set_ban_nowait(None, ban.address)
            await writer.flush()
            assert store.bans() == []
        nursery.cancel_scope.cancel()


def record(done: list[tuple[int, bool]], seq: int) -> Callable[[bool], None]:
    """An `on_done` that notes `(seq, saved)` in `done`."""
    return lambda saved: done.append((seq, saved))


class Reports:
    """What a writer told the room about saving, and an event for each change."""

    def __init__(self) -> None:
        self.reasons: list[str | None] = []
        self.changed = trio.Event()

    def __call__(self, reason: str | None) -> None:
        self.reasons.append(reason)
        self.changed.set()
        self.changed = trio.Event()


linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="a file size limit set on another process is Linux's"
)


def refuse_writes(process: HistoryProcess, db: Path, spare: int) -> Callable[[], None]:
    """Make the kernel refuse the history process's writes once the WAL grows by `spare`
    bytes, as a full disk does (a real tiny filesystem needs root and a mount); returns what
    gives the space back. The caller keeps the WAL from being checkpointed meanwhile (a
    checkpoint lets SQLite write the WAL from its start again)."""
    pid = process.pid
    assert pid is not None
    wal = db.with_name(db.name + "-wal").stat().st_size
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (wal + spare, resource.RLIM_INFINITY))
    return lambda: resource.prlimit(
        pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries at once, and no checkpoint that could give a refused WAL its space back."""
    monkeypatch.setattr(history_writer, "RETRY_SECONDS", 0.05)
    monkeypatch.setattr(history_writer, "SYNC_SECONDS", 3600.0)


# The writer's commits run in another process, which a MockClock cannot wait for (autojump
# would leap to the test's deadline while a commit runs): these use the real clock, with the
# writer's intervals made short.


@linux_only
@pytest.mark.usefixtures("quick_retries")
async def test_a_full_disk_is_reported_and_does_not_stop_the_room(
    store: HistoryStore, db: Path, process: HistoryProcess
) -> None:
    reports = Reports()
    writer = HistoryWriter(store, process, on_failing=reports)
    done: list[tuple[int, bool]] = []
    big = "x" * 5000  # more than a page: every entry needs new ones
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(20):
            writer.append_nowait(say(1, big), record(done, 1))
            await writer.flush()
            give_back = refuse_writes(process, db, 100_000)
            seq = 1
            while writer.failing is None:
                seq += 1
                writer.append_nowait(say(seq, big), record(done, seq))
                await writer.flush()
            assert reports.reasons == [writer.failing]
            assert "disk I/O error" in writer.failing
            assert "\n" not in writer.failing
            # Still acknowledged, at once, saying it was not saved; the writer keeps going.
            assert done[-1] == (seq, False)
            failed_at = seq
            seq += 1
            writer.append_nowait(say(seq, big), record(done, seq))
            await writer.flush()
            assert done[-1] == (seq, False)
            # Space comes back: the next retry saves everything held, and says so.
            give_back()
            await reports.changed.wait()
            assert reports.reasons[1:] == [None]
            assert writer.failing is None
            seq += 1
            writer.append_nowait(say(seq), record(done, seq))
            await writer.flush()
            assert done[-1] == (seq, True)
        nursery.cancel_scope.cancel()
    assert failed_at > 2
    assert [e.seq for e in store.recent(1000)] == list(range(1, seq + 1))
    assert all(saved for n, saved in done if n < failed_at)
    assert writer.given_up == 0


@linux_only
@pytest.mark.usefixtures("quick_retries")
async def test_the_writer_gives_up_on_the_oldest_when_it_holds_too_many(
    store: HistoryStore, db: Path, process: HistoryProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_writer, "MAX_UNSAVED", 5)
    reports = Reports()
    writer = HistoryWriter(store, process, on_failing=reports)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(20):
            writer.set_ban_nowait(None, "10.0.0.1")  # the process starts with a commit
            await writer.flush()
            give_back = refuse_writes(process, db, 0)
            for seq in range(1, 9):
                writer.append_nowait(say(seq, "x" * 5000))
                await writer.flush()
            assert writer.given_up == 3
            give_back()
            await reports.changed.wait()
            assert writer.failing is None
        nursery.cancel_scope.cancel()
    assert [e.seq for e in store.recent(100)] == [4, 5, 6, 7, 8]
    assert store.last_seq() == 8  # the numbers given up on are never given out again


@pytest.mark.usefixtures("quick_retries")
async def test_a_history_process_that_dies_is_reported_and_another_saves_what_it_lost(
    store: HistoryStore, process: HistoryProcess
) -> None:
    reports = Reports()
    writer = HistoryWriter(store, process, on_failing=reports)
    done: list[tuple[int, bool]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(20):
            writer.append_nowait(say(1), record(done, 1))
            await writer.flush()
            first = process.pid
            assert first is not None
            os.kill(first, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            seq = 1
            while writer.failing is None:  # the commits the dead one took fail
                seq += 1
                writer.append_nowait(say(seq), record(done, seq))
                await writer.flush()
            assert "the history's process ended (exit status" in writer.failing
            assert "\n" not in writer.failing
            await reports.changed.wait()  # the retry starts another, which saves them
            assert reports.reasons[1:] == [None]
            assert process.pid not in (None, first)
        nursery.cancel_scope.cancel()
    assert done[0] == (1, True)
    assert [e.seq for e in store.recent(100)] == list(range(1, seq + 1))


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from multichat.server.history import HistoryStore
    from multichat.server.history_entries import StoredEntry
    from multichat.server.history_process import HistoryProcess
    from multichat.server.history_writer import HistoryWriter

    async def main():
        process = HistoryProcess()
        writer = HistoryWriter(HistoryStore.open(Path(sys.argv[1])), process)

        def committed(seq, saved):
            assert saved
            print(seq, flush=True)

        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await nursery.start(writer.run)
            seq = 0
            while True:
                for _ in range(5):
                    seq += 1
                    entry = StoredEntry(seq, 0.0, "message", "alice", f"message {seq}")
                    writer.append_nowait(entry, lambda saved, seq=seq: committed(seq, saved))
                await trio.sleep(0.001)

    trio.run(main)
    """
)


def test_every_acknowledged_entry_survives_kill_9(db: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    acknowledged: list[int] = []
    try:
        for line in process.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 400:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, stderr
    assert len(acknowledged) >= 400, stderr
    reopened = HistoryStore.open(db)
    stored = {e.seq for e in reopened.entries()}
    assert set(acknowledged) <= stored
    assert reopened.last_seq() >= max(acknowledged)
    reopened.close()


async def test_retention_runs_at_start_and_then_every_interval(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_writer, "PRUNE_EVERY_SECONDS", 0.3)
    pruned = trio.Semaphore(0, max_value=100)
    token = trio.lowlevel.current_trio_token()

    class CountingStore(HistoryStore):
        def prune(self, keep_days: float, keep_entries: int, *, now: float | None = None) -> int:
            removed = super().prune(keep_days, keep_entries, now=now)
            trio.from_thread.run_sync(pruned.release, trio_token=token)
            return removed

    store = CountingStore.open(db)
    store.append([say(seq, ts=0.0) for seq in range(1, 4)])  # 1970: far past 30 days
    async with trio.open_nursery() as nursery:
        await nursery.start(prune_periodically, store, HistorySettings())
        with trio.fail_after(20):
            await pruned.acquire()
            assert store.recent(10) == []
            store.append([say(4, ts=0.0)])
            start = trio.current_time()
            await pruned.acquire()
            assert trio.current_time() - start >= 0.3 * 0.9
            assert store.recent(10) == []
        nursery.cancel_scope.cancel()
    store.close()


# -- the [history] table --


def test_history_settings_come_from_the_same_file_as_the_limits(tmp_path: Path) -> None:
    config = tmp_path / "room.toml"
    config.write_text(
        "[limits]\nmax_text_chars = 2000\n\n[history]\nkeep_days = 7.5\nkeep-entries = 500\n"
    )
    assert load_history_settings(config) == HistorySettings(keep_days=7.5, keep_entries=500)
    assert load_limits(config) == Limits(max_text_chars=2000)
    config.write_text("[limits]\nmax_text_chars = 2000\n")
    assert load_history_settings(config) == HistorySettings()
    assert HistorySettings() == HistorySettings(keep_days=30, keep_entries=100_000, resume_max=1000)


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ("[history]\nkeep_weeks = 2\n", "unknown [history] key 'keep_weeks'"),
        ("[history]\nkeep_entries = 1.5\n", "'keep_entries' must be a whole number"),
        ("[history]\nkeep_days = -1\n", "'keep_days' must be a number >= 0"),
        ("[history]\nresume_max = true\n", "'resume_max' must be a whole number"),
        ("history = 3\n", "[history] must be a table"),
        ("[history\n", "is not valid TOML"),
    ],
)
def test_a_bad_history_table_is_one_line(tmp_path: Path, table: str, complaint: str) -> None:
    config = tmp_path / "room.toml"
    config.write_text(table)
    with pytest.raises(HistorySettingsError) as caught:
        load_history_settings(config)
    assert complaint in one_line(caught.value)


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HistorySettingsError, match="cannot read") as caught:
        load_history_settings(tmp_path / "nope.toml")
    one_line(caught.value)


@pytest.mark.parametrize("sizes", [[1, 2, 3], [512, 513], [1000, 7, 1]])
def test_a_batch_of_any_size_is_stored_whole_and_in_order(
    store: HistoryStore, sizes: list[int]
) -> None:
    seq = 0
    for size in sizes:
        batch = [
            say(seq + i + 1, f"m{seq + i + 1}", to="bob" if i % 3 == 0 else None)
            for i in range(size)
        ]
        store.append(batch)
        seq += size
    stored = list(store.entries(include_private=True))
    assert [e.seq for e in stored] == list(range(1, seq + 1))
    assert [e.text for e in stored] == [f"m{n}" for n in range(1, seq + 1)]
    assert store.last_seq() == seq
    with pytest.raises(HistoryError):  # seq 1 again: the whole batch is refused
        store.append([say(seq + 1), say(1)])
    assert store.last_seq() == seq


async def test_a_commit_takes_at_most_max_batch_and_the_rest_follow(
    store: HistoryStore, process: HistoryProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readable a commit at a time: a huge commit would make one huge fan-out."""
    monkeypatch.setattr(history_writer, "MAX_BATCH", 4)
    commits: list[int] = []
    writer = HistoryWriter(store, process, on_flushed=commits.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(10):
            for seq in range(1, 11):
                writer.append_nowait(say(seq))
            await writer.flush()
            # Cancelled with more than a batch queued: every one is still committed.
            for seq in range(11, 21):
                writer.append_nowait(say(seq))
        nursery.cancel_scope.cancel()
    assert commits[:3] == [4, 4, 2]
    assert all(count <= 4 for count in commits)
    assert [e.seq for e in store.recent(100)] == list(range(1, 21))
