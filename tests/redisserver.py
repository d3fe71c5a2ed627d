"""A real Redis for the tests: Debian's `redis-server` as a child process on a free loopback
port, in a directory of its own, stopped by its pid.

Redis has no `--port 0`, so the port is one the kernel just gave out to a socket we bound and
closed; another process may take it in between, and then the server exits at once saying so,
and is started again on another. `stop()` and `start()` again keep the port and the directory:
what the tests call "Redis stopped and started again under traffic" (with `appendonly`, what it
had is still there). Never port 6379, where a system Redis may listen.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Debian's package puts it here (scripts/test installs it when it is missing).
REDIS_SERVER = "/usr/bin/redis-server"
# Starting takes milliseconds (loading a test's append-only file too); a loaded machine
# running three test suites at once can take a few seconds.
START_SECONDS = 15.0
# SIGTERM makes Redis flush its append-only file and exit, in milliseconds; past this it is
# stuck, and SIGKILL ends it.
STOP_SECONDS = 10.0
# Another process taking the port between our probe and Redis's bind is rare; twice in a row
# is a machine out of ports.
PORT_ATTEMPTS = 5


def redis_installed() -> bool:
    return os.access(REDIS_SERVER, os.X_OK) or shutil.which("redis-server") is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class RedisServer:
    """One redis-server: `start()`, `stop()` (SIGTERM), `kill()` (SIGKILL: a crash)."""

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the Redis server was never started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start it (again on the same port and directory, if it ran before)."""
        if self.process is not None:
            raise RuntimeError("the Redis server is running already")
        fixed = self.port is not None
        for _ in range(PORT_ATTEMPTS):
            port = self.port if fixed and self.port is not None else _free_port()
            if self._spawn(port):
                self.port = port
                return
            if fixed:
                break
        raise RuntimeError(f"redis-server did not start: {self._log_tail()}")

    def _spawn(self, port: int) -> bool:
        """Start on `port` and wait for PING; False if the port was taken."""
        program = REDIS_SERVER if os.access(REDIS_SERVER, os.X_OK) else "redis-server"
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.process = subprocess.Popen(
            [
                program,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.log_file),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the test run is for pytest, not for Redis
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                if "in use" in self._log_text(offset):
                    return False
                raise RuntimeError(f"redis-server exited at start: {self._log_tail(offset)}")
            if self._answers(port):
                return True
            time.sleep(0.02)
        self._end(signal.SIGKILL)
        raise RuntimeError(f"redis-server did not answer within {START_SECONDS:.0f} s")

    def stop(self) -> None:
        """SIGTERM (Redis then flushes its append-only file), SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: Redis dies as in a crash (what its append-only file had not written in
        the last second may be lost)."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_SECONDS)

    def command(self, *args: str) -> bytes:
        """Send one command, for the tests' own checks. The answer as it comes (`:1`, `+OK`,
        `-ERR ...`), but a bulk string's data alone, and b"" for none (`$-1`)."""
        if self.port is None:
            raise RuntimeError("the Redis server was never started")
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(request.encode())
            answer = b""
            while b"\r\n" not in answer or (
                answer.startswith(b"$")
                and not answer.startswith(b"$-1")
                and len(answer.split(b"\r\n", 1)[1]) < int(answer[1 : answer.index(b"\r\n")]) + 2
            ):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        head, _, rest = answer.partition(b"\r\n")
        if head.startswith(b"$"):
            return b"" if head == b"$-1" else rest[: int(head[1:])]
        return head

    def _answers(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_text(self, offset: int = 0) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, offset: int = 0) -> str:
        lines = self._log_text(offset).strip().splitlines()
        return lines[-1] if lines else "no log"
