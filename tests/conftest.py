"""Fixtures shared by the tests: a real server on a loopback port, and a raw test client."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from chatpeer import Peer, RoomFixture, start_room  # noqa: E402
from redisserver import RedisServer, redis_installed  # noqa: E402

# Tests never reach the internet, and pyngrok must never try to download its agent.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
async def room() -> AsyncIterator[RoomFixture]:
    """A server with relaxed flood and per-source limits (every test client is 127.0.0.1)."""
    async with start_room() as fixture:
        yield fixture


__all__ = ["Peer", "RoomFixture", "room", "trio"]


@pytest.fixture(autouse=True)
def _private_data_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rooms a test starts (in this process or in subprocesses, which inherit the environment)
    keep their data directories under the test's own directory, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))


# -- a real Redis for the backplane (tests/redisserver.py) --


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run, on a free loopback port, with its append-only file;
    stopped at the end. Tests share it, each in a namespace of its own; a test that stops
    Redis starts a `RedisServer` of its own instead."""
    if not redis_installed():
        pytest.fail(
            "redis-server is not installed: run scripts/test, which installs Debian's "
            "redis-server (or: apt-get install -y --no-install-recommends redis-server)",
            pytrace=False,
        )
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=True) as server:
        yield server


@pytest.fixture
def own_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test alone, with an append-only file: for a test that stops,
    restarts, freezes or reconfigures it (`redis_server` is asked for only for its check
    that redis-server is installed)."""
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server
