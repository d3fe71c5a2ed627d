"""The running room's state file: how `status` and `down` find the room and prove themselves.

`up` and `serve` write one file per port (pid, port, addresses, a random control token) in the
user's runtime directory, readable by the user alone, and remove it on exit. A file left by a
process that died is recognised and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

STATE_DIR_ENV = "MULTICHAT_STATE_DIR"
# A state file is a few hundred bytes; anything much larger is not ours.
MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RoomState:
    """What a running room tells the host's other commands about itself."""

    pid: int
    port: int
    token: str
    room: str
    started: float
    lan: list[str] = field(default_factory=list)
    https: str | None = None  # the tunnel's link, for browsers and `multichat connect`
    tcp: str | None = None  # the tunnel's TCP address, when the ngrok account allows one
    version: str = ""
    host: str = ""  # the address it listens on; "" for every interface
    # The SHA-256 of the room's TLS certificate, which its invites pin (`multichat invite`
    # builds them from this file); "" in files from before TLS.
    fingerprint: str = ""
    # The PID namespace it runs in (Linux): a container that shares the state directory but
    # not the PIDs (compose's tunnel) cannot judge its pid, and must not call it dead.
    pidns: str = field(default_factory=lambda: current_pidns())

    def pid_visible(self) -> bool:
        """Whether `pid` means the room's process here (same PID namespace)."""
        return not self.pidns or not current_pidns() or self.pidns == current_pidns()

    def control_host(self) -> str:
        """Where the host's own commands reach the room."""
        return self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"


def current_pidns() -> str:
    """This process's PID namespace, e.g. `pid:[4026531836]`; "" where there is none to read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return ""


def state_dir() -> Path:
    """Where state files live: `MULTICHAT_STATE_DIR`, else the user's runtime directory."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"multichat-{uid}"
    if _no_runtime_dir():
        # Over ssh and in most containers there is no XDG_RUNTIME_DIR; platformdirs would warn
        # (with a source line) on the user's terminal and guess a directory anyway.
        return fallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runtime = Path(platformdirs.user_runtime_dir("multichat", appauthor=False))
    try:
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        return runtime
    except OSError:
        # Containers and minimal systems often have no /run/user/UID.
        return fallback


def _no_runtime_dir() -> bool:
    unix = os.name == "posix" and sys.platform != "darwin"
    return unix and not os.environ.get("XDG_RUNTIME_DIR")


def state_path(port: int) -> Path:
    return state_dir() / f"room-{port}.json"


def write_state(state: RoomState) -> Path:
    """Write (or replace) the state file atomically, mode 0600."""
    path = state_path(state.port)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(state), out)
    os.replace(tmp, path)
    return path


def remove_state(port: int, pid: int | None = None) -> None:
    """Remove the state file for `port`, if it is still ours (`pid`)."""
    path = state_path(port)
    if pid is not None:
        state = read_state(path)
        if state is not None and state.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_state(path: Path) -> RoomState | None:
    """The state in `path`, or None if it is missing or unreadable."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATE_BYTES)
        data = json.loads(raw)
        return RoomState(
            pid=int(data["pid"]),
            port=int(data["port"]),
            token=str(data["token"]),
            room=str(data.get("room", "")),
            started=float(data.get("started", 0.0)),
            lan=[str(a) for a in data.get("lan", [])],
            https=str(data["https"]) if data.get("https") else None,
            # Files from before the HTTPS link call the TCP address `public`.
            tcp=str(data.get("tcp") or data.get("public") or "") or None,
            version=str(data.get("version", "")),
            host=str(data.get("host", "")),
            fingerprint=str(data.get("fingerprint", "")),
            pidns=str(data.get("pidns", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would kill it there
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits for its parent to reap it (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False  # no /proc here: os.kill's answer stands
    # The state letter follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def running_rooms() -> list[RoomState]:
    """Every room with a state file whose process is alive; stale files are removed.

    A room in another PID namespace (another container sharing the directory) is listed:
    only its own port can say whether it is up.
    """
    directory = state_dir()
    rooms = []
    for path in sorted(directory.glob("room-*.json")) if directory.is_dir() else []:
        state = read_state(path)
        if state is None or (state.pid_visible() and not pid_alive(state.pid)):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        rooms.append(state)
    return rooms
