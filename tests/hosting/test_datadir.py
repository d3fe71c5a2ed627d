"""The data directory: one room per directory (a real second process is refused), private
modes, and one-line messages for directories that cannot be used."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from multichat.hosting.datadir import (
    HISTORY_FILE,
    LOCK_FILE,
    MAX_DIR_NAME_CHARS,
    DataDir,
    DataDirError,
    default_data_dir,
    room_dir,
    safe_dir_name,
)
from multichat.server.history import HistoryStore

# A second room: opens the directory, says so, and holds it until its stdin closes. Run as
# `nobody` when the tests run as root, since root may write anywhere.
SECOND_ROOM = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from multichat.hosting.datadir import DataDir, DataDirError

    if sys.argv[2] == "unprivileged" and os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    try:
        held = DataDir.open(Path(sys.argv[1]))
    except DataDirError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print("holding", flush=True)
    sys.stdin.read()
    held.close()
    """
)


def second_room(path: Path, *, unprivileged: bool = False) -> subprocess.Popen[str]:
    mode = "unprivileged" if unprivileged else "same-user"
    return subprocess.Popen(
        [sys.executable, "-c", SECOND_ROOM, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def refusal(process: subprocess.Popen[str]) -> str:
    """The one line a second room printed as it refused to start."""
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr.strip()


def holding(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "holding\n", process.stderr.read() if process.stderr else line


def test_a_room_name_becomes_a_portable_directory_name_unique_to_it() -> None:
    assert safe_dir_name("multichat") == "multichat"
    assert safe_dir_name("book-club_2.0") == "book-club_2.0"
    names = ["Friends & Family", "friends-family", "a b", "a/b", "A B", "..", "", "con", "🎲"]
    made = [safe_dir_name(name) for name in names]
    assert len(set(made)) == len(made)
    for name in made:
        assert name and "/" not in name and "\\" not in name and not name.startswith(".")
        assert name.isascii() and len(name) <= MAX_DIR_NAME_CHARS + 9
    assert safe_dir_name("Friends & Family").startswith("friends-family-")
    assert safe_dir_name("con").startswith("con-")  # a device name on Windows
    assert len(safe_dir_name("x" * 500)) <= MAX_DIR_NAME_CHARS + 9


def test_the_default_directory_is_under_the_users_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert default_data_dir("multichat") == tmp_path / "multichat" / "rooms" / "multichat"
    assert default_data_dir("Book Club").name == safe_dir_name("Book Club")


def test_a_new_directory_and_its_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "room"
    with DataDir.open(path) as data:
        assert data.path == path
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        lock = path / LOCK_FILE
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert lock.read_text() == f"{os.getpid()}\n"
        assert data.history_path == path / HISTORY_FILE
        HistoryStore.open(data.history_path).close()
        assert stat.S_IMODE(data.history_path.stat().st_mode) == 0o600


def test_a_second_process_on_the_same_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "room"
    with DataDir.open(path):
        line = refusal(second_room(path))
    assert line == (
        f"the data directory {path} is in use by another multichat (pid {os.getpid()}); "
        "stop that room first, or give this one another --data-dir"
    )
    # Released with the directory: the next room starts.
    other = second_room(path)
    holding(other)
    try:
        # ... and now it is the one that holds it, against this process too.
        with pytest.raises(DataDirError) as caught:
            DataDir.open(path)
        assert f"(pid {other.pid})" in str(caught.value)
    finally:
        other.communicate("", timeout=30)
    assert other.returncode == 0


def test_a_killed_room_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "room"
    first = second_room(path)
    holding(first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    with DataDir.open(path) as data:
        assert (data.path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_one_process_cannot_hold_a_directory_twice(tmp_path: Path) -> None:
    with DataDir.open(tmp_path), pytest.raises(DataDirError, match="in use"):
        DataDir.open(tmp_path)


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A directory anyone may enter and no one but root may write (tmp_path is 0700 root's,
    so it is made outside it, where an unprivileged process can reach)."""
    with tempfile.TemporaryDirectory(prefix="multichat-test-") as top:
        os.chmod(top, 0o755)
        path = Path(top) / "read-only"
        path.mkdir(mode=0o555)
        os.chmod(path, 0o555)
        try:
            yield path
        finally:
            os.chmod(path, 0o755)


def test_a_directory_that_cannot_be_written_is_one_line(read_only_dir: Path) -> None:
    line = refusal(second_room(read_only_dir, unprivileged=True))
    assert line == f"cannot write in the data directory {read_only_dir}: Permission denied"
    assert list(read_only_dir.iterdir()) == []


def test_a_directory_that_cannot_be_created_is_one_line(read_only_dir: Path) -> None:
    path = read_only_dir / "room"
    line = refusal(second_room(path, unprivileged=True))
    assert line == f"cannot create the data directory {path}: Permission denied"


def test_a_file_in_the_way_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "room"
    blocker.write_text("not a directory")
    with pytest.raises(DataDirError) as caught:
        DataDir.open(blocker)
    assert str(caught.value) == f"the data directory {blocker} exists and is not a directory"
    with pytest.raises(DataDirError) as caught:
        DataDir.open(blocker / "inside")
    assert str(caught.value) == (
        f"cannot create the data directory {blocker / 'inside'}: Not a directory"
    )
    assert blocker.read_text() == "not a directory"


def test_every_other_room_keeps_a_private_history_of_its_own_inside(tmp_path: Path) -> None:
    from multichat.hosting.roomdata import RoomData

    path = tmp_path / "data"
    data = RoomData.open("den", rooms=["Games"], data_dir=path)
    try:
        games = data.open_room_history("GAMES")  # the same room: the same store
        assert games is not None and games is data.open_room_history("games")
        assert data.open_room_history("attic") is not data.open_room_history("games")
        listed = sorted(p.name for p in (path / "rooms").iterdir())
        assert [name.rsplit("-", 1)[0] for name in listed] == ["attic", "games"]
        assert room_dir(path, "GAMES") == room_dir(path, "gаmes") == path / "rooms" / listed[1]
        for name in listed:
            directory = path / "rooms" / name
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            assert stat.S_IMODE((directory / HISTORY_FILE).stat().st_mode) == 0o600
        assert (path / HISTORY_FILE).is_file(), "the first room's, where it always was"
    finally:
        data.close()
    ephemeral = RoomData.open("den", rooms=["games"], ephemeral=True)
    assert ephemeral.open_room_history("games") is None
    ephemeral.close()
