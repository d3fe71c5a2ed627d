"""The examples in docs/ run: each is executed against a real server on a loopback port."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from chatpeer import start_room

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(doc: str) -> list[str]:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


async def test_the_websocket_client_example_in_the_protocol_doc_runs() -> None:
    (example,) = [b for b in python_blocks("protocol.md") if "WSConnection" in b]
    async with start_room() as room:
        code = example.replace('"192.168.1.20", 5002', f'"127.0.0.1", {room.port}')
        with trio.fail_after(30):
            done = await trio.run_process(
                [sys.executable, "-c", code], capture_stdout=True, capture_stderr=True, check=False
            )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "'type': 'welcome'" in out and "'id': 1" in out
