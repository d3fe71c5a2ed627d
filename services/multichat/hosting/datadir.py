"""A room's data directory: where its history lives, and the lock that makes it one room's.

One server, one directory: the first room's history is in it (where a server of one room has
always kept it), and each other room's in `rooms/NAME-HASH/` inside it: NAME readable, HASH
from the room's name as rooms are told apart (`room_key`), so that every spelling of a room
("Games", "GAMES", "Games" with a Cyrillic a) finds the one directory its history is in. The
server holds an OS lock on the directory's `lock` file for as long as its process lives
(`flock` on POSIX, `msvcrt.locking` on Windows), so a second one started on the same directory
refuses at once, naming the first one's pid; the kernel drops the lock when the process dies,
however it dies, so a crash never leaves a stale lock behind. Readers
(`multichat export`) take no lock: SQLite's WAL mode lets them read while the room writes.

The directory is private: created 0700, its files 0600, because history holds what friends
said to each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from pathlib import Path

import platformdirs

from ..protocol.names import room_key

LOCK_FILE = "lock"
HISTORY_FILE = "history.sqlite3"
# Inside a data directory: one directory per room other than the first.
ROOMS_DIR = "rooms"
# A directory name is kept short and portable: most filesystems allow 255 bytes, but a room
# name is free text (emoji, slashes), and the path must also fit Windows' 260 characters.
MAX_DIR_NAME_CHARS = 48
# Windows refuses these as file names, with any extension.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{p}{n}" for p in ("com", "lpt") for n in range(1, 10)]
)
# The lock file names the holder's pid; anything longer is not ours.
MAX_LOCK_FILE_BYTES = 64
# On Windows, `msvcrt.locking` makes the locked bytes unreadable to others: lock one far past
# the pid, which the second process must be able to read.
_WINDOWS_LOCK_OFFSET = 1 << 30


class DataDirError(Exception):
    """The data directory cannot be used; the message is one line, for the host."""


def safe_dir_name(room: str) -> str:
    """A directory name for the room `room`: readable, portable, different for every name.

    A plain lowercase name is kept as it is; anything else is reduced to letters, digits, `.`,
    `_` and `-`, with a short hash of the real name so that "a b" and "a/b" stay apart.
    """
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", room.lower()).strip(".-")[:MAX_DIR_NAME_CHARS]
    if cleaned and cleaned == room and cleaned.split(".")[0] not in _WINDOWS_RESERVED:
        return cleaned
    digest = hashlib.sha256(room.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else f"room-{digest}"


def default_data_dir(room: str) -> Path:
    """Where the room `room` keeps its data unless `--data-dir` says otherwise."""
    base = Path(platformdirs.user_data_dir("multichat", appauthor=False))
    return base / "rooms" / safe_dir_name(room)


def locate_room(room: str, data_dir: Path | None = None) -> Path:
    """The directory whose history is the room `room`'s, for `multichat export`.

    With `data_dir`, a server's data directory: the room's own under `rooms/`, else the
    directory itself (the server's first room, whose name it does not record). Without one:
    the room's default directory if it has one, else the one room of that name among the other
    rooms of the servers in the user's data directory. Raises DataDirError when several are.
    """
    if data_dir is not None:
        own = room_dir(data_dir, room)
        return own if _is_dir(own) else data_dir
    default = default_data_dir(room)
    if _is_dir(default):
        return default
    found = sorted(default.parent.glob(f"*/{ROOMS_DIR}/*-{_room_digest(room)}"))
    if len(found) > 1:
        places = ", ".join(str(p) for p in found)
        raise DataDirError(
            f"the room {room!r} is in several data directories ({places}): give --data-dir"
        )
    return found[0] if found else default


def room_dir(path: Path, room: str) -> Path:
    """Where the room `room`, not the server's first, keeps its history in the data directory
    `path` (`rooms/games-1a2b3c4d`): found by the hash of its key, so the same directory for
    every spelling that names the same room, whichever made it."""
    digest = _room_digest(room)
    rooms = path / ROOMS_DIR
    found = sorted(rooms.glob(f"*-{digest}")) if _is_dir(rooms) else []
    if found:
        return found[0]
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", room.lower()).strip(".-")[:MAX_DIR_NAME_CHARS]
    return rooms / f"{cleaned or 'room'}-{digest}"


def _room_digest(room: str) -> str:
    # Of the room's key: every spelling of one room finds one directory.
    return hashlib.sha256(room_key(room).encode("utf-8", "surrogatepass")).hexdigest()[:8]


def make_private_dir(path: Path) -> None:
    """Create `path` (and its parents) readable by this user alone, or raise DataDirError."""
    try:
        path.mkdir(parents=True, mode=0o700)
        # mkdir's mode passes through the umask; a strange umask must not leave the
        # directory unwritable (or, worse, readable by others).
        os.chmod(path, 0o700)
    except FileExistsError:
        if not _is_dir(path):
            raise DataDirError(f"the data directory {path} exists and is not a directory") from None
    except OSError as exc:
        raise DataDirError(f"cannot create the data directory {path}: {_reason(exc)}") from None


class DataDir:
    """A data directory this process holds (`open` it; the lock lasts until `close`)."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY_FILE

    @classmethod
    def open(cls, path: Path) -> DataDir:
        """Create `path` if needed (mode 0700), and lock it for this process.

        Raises DataDirError when the directory cannot be created or written, or another
        process holds it.
        """
        path = Path(path)
        make_private_dir(path)
        lock_path = path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(
                f"cannot write in the data directory {path}: {_reason(exc)}"
            ) from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise DataDirError(f"cannot lock the data directory {path}: {_reason(exc)}") from None
        if not locked:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"another multichat (pid {holder})" if holder else "another multichat"
            raise DataDirError(
                f"the data directory {path} is in use by {who}; stop that room first, "
                "or give this one another --data-dir"
            )
        _write_pid(fd)
        return cls(path, fd)

    def close(self) -> None:
        """Release the directory (the lock file stays: removing it would race a new holder)."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:
            return False
        except OSError as exc:
            if exc.errno == 36:  # EDEADLOCK: the byte is locked by another process
                return False
            raise
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, MAX_LOCK_FILE_BYTES)
    except OSError:
        return None
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _write_pid(fd: int) -> None:
    # Only a hint for the message above: a full disk must not stop the room from starting.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
