"""Fixtures shared by the tests: a real server on a loopback port, and a raw test client."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from chatpeer import Peer, RoomFixture, start_room  # noqa: E402

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
