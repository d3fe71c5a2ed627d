"""`scripts/bench --backplane`: two servers sharing their room through a real Redis.

Issue 16 asks what the backplane costs, not whether two servers outrun one: two cores cannot
show that. So each scenario runs on one server (`json`) and, round by round beside it, on two
`multichat serve --backplane` processes and a Debian `redis-server` (`json/bp`), the members
split between the servers, senders on both (loadgen's `spread`). Judged, in the same run:
the servers' CPU per delivery summed against one server's, and the p99 of messages that cross
servers against one server's steady p99. Redis's own CPU is reported beside them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .scenarios import BACKPLANE_CPU_TARGET, BACKPLANE_P99_TARGET, Scenario

# The suffix of a mode run on two servers and Redis.
BACKPLANE_SUFFIX = "/bp"
# What --backplane runs unless --scenario says otherwise: the two judgements.
BACKPLANE_SCENARIOS = ("paced", "steady")
# How many servers share the room: the "two servers and Redis".
SERVERS = 2
# Redis answers PING within this long of starting, or the benchmark cannot run.
REDIS_START_SECONDS = 10.0


class RedisError(Exception):
    """Redis could not be started for the benchmark."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_redis(folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A `redis-server` of its own on 127.0.0.1 (never 6379): its process and its URL.

    With its append-only file fsynced every second, as docker-compose.yml runs it.
    """
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RedisError("--backplane needs Debian's redis-server: apt-get install -y redis-server")
    port = free_port()
    data = folder / "redis"
    data.mkdir()
    command = [
        binary,
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
    ]  # fmt: skip
    with open(folder / "redis.log", "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=log_file)
    try:
        _wait_for_ping(port, process)
        yield process, f"redis://127.0.0.1:{port}/0"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_for_ping(port: int, process: subprocess.Popen[bytes]) -> None:
    give_up = time.monotonic() + REDIS_START_SECONDS
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RedisError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RedisError(f"redis-server did not answer within {REDIS_START_SECONDS:.0f} s")


def compare_with_one_server(sc: Scenario, shared: dict[str, Any], alone: dict[str, Any]) -> None:
    """Judge a backplane report against one server's in the same run (issue 16's targets):
    paced, the servers' CPU per delivery summed; steady, the p99."""
    for report in (shared, alone):
        cores, rate = report.get("server_cpu_cores"), report.get("offered_deliveries_per_s")
        report["cpu_us_per_delivery"] = round(cores / rate * 1e6, 3) if cores and rate else None
    mine, theirs = shared["cpu_us_per_delivery"], alone["cpu_us_per_delivery"]
    if mine is not None and theirs:
        shared["vs_one_server_cpu"] = round(mine / theirs, 3)
        if sc.name == "paced":
            shared["met_backplane"] = mine / theirs <= BACKPLANE_CPU_TARGET
    p99, steady = shared.get("p99_ms"), alone.get("p99_ms")
    if sc.name == "steady" and p99 is not None and steady:
        shared["vs_one_server_p99"] = round(p99 / steady, 3)
        shared["met_backplane"] = p99 / steady <= BACKPLANE_P99_TARGET
