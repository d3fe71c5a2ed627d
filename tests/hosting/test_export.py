"""`multichat export`, the real command in a subprocess, reading a data directory that a
running writer process holds (as a room would), and after that process has stopped."""

from __future__ import annotations

import calendar
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from multichat.hosting.datadir import room_dir
from multichat.server.history import HistoryStore
from multichat.server.history_entries import MESSAGE, StoredEntry

MULTICHAT = Path(sys.executable).parent / "multichat"
# 2025-06-15 10:00:00 UTC; the tests run with TZ=UTC, so local time is the same.
T0 = calendar.timegm((2025, 6, 15, 10, 0, 0))
DAY = 86_400

# A room's stand-in: holds the data directory and writes through the real writer. Each line
# on its stdin is one more message from bob; it prints "ready" once everything is committed.
ROOM = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from multichat.hosting.datadir import DataDir, default_data_dir
    from multichat.protocol.events import Join, Leave, Message
    from multichat.server.history import HistoryStore
    from multichat.server.history_entries import StoredEntry
    from multichat.server.history_process import HistoryProcess
    from multichat.server.history_writer import HistoryWriter

    T0 = float(sys.argv[2])

    async def main():
        where = sys.argv[1]
        path = None if where.startswith("room:") else Path(where)
        data = DataDir.open(path if path else default_data_dir(where[len("room:"):]))
        process = HistoryProcess()
        writer = HistoryWriter(HistoryStore.open(data.history_path), process)
        # Numbered as the room's log numbers them: a join or leave carries the newest
        # message's seq.
        events = [
            (0, Join("alice", T0)),
            (1, Message(1, T0 + 60, "alice", "hello")),
            (2, Message(2, T0 + 120, "alice", "psst", to="bob")),
            (3, Message(3, T0 + 86400, "bob", "see you\\ntomorrow")),
            (4, Message(4, T0 + 86460, "bob", "waves", action=True)),
            (4, Leave("bob", "quit", T0 + 86520)),
        ]
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await nursery.start(writer.run)
            for seq, event in events:
                writer.append_nowait(StoredEntry.from_event(event, seq=seq))
            while True:
                await writer.flush()
                print("ready", flush=True)
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                seq += 1
                message = Message(seq, T0 + 2 * 86400, "bob", line.strip())
                writer.append_nowait(StoredEntry.from_event(message))
            nursery.cancel_scope.cancel()
        data.close()

    trio.run(main)
    """
)

TEXT = [
    "[2025-06-15 10:00:00] * alice joined",
    "[2025-06-15 10:01:00] alice: hello",
    "[2025-06-16 10:00:00] bob: see you",
    "                      tomorrow",
    "[2025-06-16 10:01:00] * bob waves",
    "[2025-06-16 10:02:00] * bob left (quit)",
]
PRIVATE = "[2025-06-15 10:02:00] alice -> bob: psst"


def environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TZ": "UTC", "XDG_DATA_HOME": str(tmp_path / "data-home")}


@dataclass
class Room:
    process: subprocess.Popen[str]

    def ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "ready\n", self.process.stderr.read() if self.process.stderr else line

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        self.ready()

    def stop(self) -> None:
        _, stderr = self.process.communicate("", timeout=30)
        assert self.process.returncode == 0, stderr


def start_room(tmp_path: Path, where: str) -> Iterator[Room]:
    process = subprocess.Popen(
        [sys.executable, "-c", ROOM, where, str(T0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp_path),
    )
    room = Room(process)
    try:
        room.ready()
        yield room
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "room-data"


@pytest.fixture
def room(tmp_path: Path, data_dir: Path) -> Iterator[Room]:
    yield from start_room(tmp_path, str(data_dir))


def export(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MULTICHAT), "export", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(tmp_path),
    )


def lines(tmp_path: Path, *args: str) -> list[str]:
    done = export(tmp_path, *args)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.splitlines()


def failure(tmp_path: Path, code: int, *args: str) -> str:
    done = export(tmp_path, *args)
    assert done.returncode == code, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip()


def test_text_while_the_room_runs_then_after_it_stopped(
    tmp_path: Path, data_dir: Path, room: Room
) -> None:
    assert lines(tmp_path, "--data-dir", str(data_dir)) == TEXT
    # What the room commits next is in the next export: no lock, no stale snapshot.
    room.say("bye now")
    assert lines(tmp_path, "--data-dir", str(data_dir))[-1] == "[2025-06-17 10:00:00] bob: bye now"
    room.stop()
    assert lines(tmp_path, "--data-dir", str(data_dir)) == [
        *TEXT,
        "[2025-06-17 10:00:00] bob: bye now",
    ]


def test_json_is_one_object_per_line(tmp_path: Path, data_dir: Path, room: Room) -> None:
    output = lines(tmp_path, "--data-dir", str(data_dir), "--format", "json")
    records = [json.loads(line) for line in output]
    assert records == [
        {"seq": 0, "ts": T0, "type": "join", "from": "alice", "text": ""},
        {"seq": 1, "ts": T0 + 60, "type": "message", "from": "alice", "text": "hello"},
        {"seq": 3, "ts": T0 + DAY, "type": "message", "from": "bob", "text": "see you\ntomorrow"},
        {"seq": 4, "ts": T0 + DAY + 60, "type": "message", "from": "bob", "text": "waves"}
        | {"action": True},
        {"seq": 4, "ts": T0 + DAY + 120, "type": "leave", "from": "bob", "text": "quit"},
    ]


def test_private_messages_only_when_asked_for(tmp_path: Path, data_dir: Path, room: Room) -> None:
    assert PRIVATE not in lines(tmp_path, "--data-dir", str(data_dir))
    assert lines(tmp_path, "--data-dir", str(data_dir), "--include-private") == [
        *TEXT[:2],
        PRIVATE,
        *TEXT[2:],
    ]
    records = lines(tmp_path, "--data-dir", str(data_dir), "--format=json", "--include-private")
    private = json.loads(records[2])
    assert (private["seq"], private["from"], private["to"]) == (2, "alice", "bob")
    public = lines(tmp_path, "--data-dir", str(data_dir), "--format=json")
    assert len(public) == 5 and all('"to"' not in line for line in public)


def test_since_a_date_or_a_time(tmp_path: Path, data_dir: Path, room: Room) -> None:
    assert lines(tmp_path, "--data-dir", str(data_dir), "--since", "2025-06-16") == TEXT[2:]
    assert lines(tmp_path, "--data-dir", str(data_dir), "--since", "2025-06-15 10:01") == TEXT[1:]
    assert lines(tmp_path, "--data-dir", str(data_dir), "--since", "2030-01-01") == []


@pytest.mark.parametrize("since", ["yesterday", "2025-13-01", "15/06/2025", "2025-06-15 25:00"])
def test_a_bad_date_is_one_line_and_exit_2(tmp_path: Path, data_dir: Path, since: str) -> None:
    # Refused before anything is read: no room needed.
    message = failure(tmp_path, 2, "--data-dir", str(data_dir), "--since", since)
    assert message == (
        f"multichat: --since {since!r} is not a date: write YYYY-MM-DD or 'YYYY-MM-DD HH:MM'"
    )


def test_output_goes_to_a_private_file(tmp_path: Path, data_dir: Path, room: Room) -> None:
    target = tmp_path / "transcript.txt"
    target.write_text("an older transcript\n")
    done = export(tmp_path, "--data-dir", str(data_dir), "--output", str(target))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
    assert target.read_text().splitlines() == TEXT
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # Written whole then renamed: no temporary file left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room-data", "transcript.txt"]


def test_a_room_by_name_is_read_from_its_default_directory(tmp_path: Path) -> None:
    for room in start_room(tmp_path, "room:Book Club"):
        assert lines(tmp_path, "--room", "Book Club") == TEXT
        message = failure(tmp_path, 1, "--room", "Chess Club")
        assert message.startswith("multichat: there is no data directory ")
        assert "chess-club-" in message
        room.stop()


def games_history(directory: Path) -> None:
    """A history for the room "Games" in `directory`, as the server writes one."""
    directory.mkdir(parents=True)
    store = HistoryStore.open(directory / "history.sqlite3")
    store.append([StoredEntry(1, T0, MESSAGE, "carol", "gg")])
    store.close()


GAMES = ["[2025-06-15 10:00:00] carol: gg"]


def test_a_room_other_than_a_servers_first_is_found_by_its_name(
    tmp_path: Path, data_dir: Path, room: Room
) -> None:
    games_history(room_dir(data_dir, "Games"))
    assert lines(tmp_path, "--data-dir", str(data_dir), "--room", "GAMES") == GAMES
    # The first room's history is the directory's own: its name is not recorded there.
    assert lines(tmp_path, "--data-dir", str(data_dir), "--room", "multichat") == TEXT
    # Without --data-dir: among the rooms of the servers in the user's data directory.
    default = tmp_path / "data-home" / "multichat" / "rooms" / "multichat"
    games_history(room_dir(default, "Games"))
    assert lines(tmp_path, "--room", "games") == GAMES
    games_history(room_dir(default.with_name("den"), "Games"))
    message = failure(tmp_path, 1, "--room", "Games")
    assert message.startswith("multichat: the room 'Games' is in several data directories (")
    assert message.endswith("): give --data-dir")
    room.stop()


def test_bad_options_are_one_line(tmp_path: Path, data_dir: Path, room: Room) -> None:
    assert failure(tmp_path, 2, "--data-dir", str(data_dir), "--format", "xml") == (
        "multichat: --format must be text or json, not 'xml'"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert failure(tmp_path, 1, "--data-dir", str(empty)) == (
        f"multichat: there is no history in {empty} (has a room run there without --ephemeral?)"
    )
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "history.sqlite3").write_bytes(b"\x00not sqlite\xff" * 1000)
    assert "is damaged" in failure(tmp_path, 1, "--data-dir", str(garbage))
    assert (garbage / "history.sqlite3").read_bytes() == b"\x00not sqlite\xff" * 1000
    missing_dir = tmp_path / "nowhere" / "out.txt"
    assert failure(tmp_path, 1, "--data-dir", str(data_dir), "-o", str(missing_dir)) == (
        f"multichat: cannot write {missing_dir}: No such file or directory"
    )


def test_a_closed_pipe_is_not_an_error(tmp_path: Path, data_dir: Path, room: Room) -> None:
    exporter = subprocess.Popen(
        [str(MULTICHAT), "export", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(tmp_path),
    )
    assert exporter.stdout is not None
    exporter.stdout.close()  # as `| head -0` would
    _, stderr = exporter.communicate(timeout=60)
    assert exporter.returncode == 0
    assert stderr == b""
