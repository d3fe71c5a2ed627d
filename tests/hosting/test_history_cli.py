"""The room's history as a host meets it: `serve --data-dir`, kill -9, a restart, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio
import trio.lowlevel

from chatpeer import PASSWORD, Peer
from multichat.protocol.events import ConnectionClosed, Hello, Message, Welcome
from servecli import serve

CLI = Path(sys.executable).parent / "multichat"
STEP = 20


async def test_every_acknowledged_message_survives_kill_9(tmp_path: Path) -> None:
    """Echoes are acknowledgements: whatever was echoed is in the history after SIGKILL."""
    data = tmp_path / "room-data"
    acked: list[str] = []
    async with serve(tmp_path, "--data-dir", str(data)) as server:
        with trio.fail_after(STEP):
            alice = await Peer.join(server.port, "alice")

            more = trio.Event()

            async def read() -> None:
                nonlocal more
                while not isinstance(event := await alice.next_event(), ConnectionClosed):
                    if isinstance(event, Message) and event.id is not None:
                        acked.append(event.text)
                        more.set()
                        more = trio.Event()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for i in range(2000):
                    await alice.say(f"line {i}", str(i))
                    if len(acked) >= 300:
                        break
                    while i + 1 - len(acked) > 50:  # a window of lines in flight, as clients do
                        await more.wait()
                server.process.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
                await server.process.wait()
    assert len(acked) >= 300
    with trio.fail_after(STEP):
        export = await trio.run_process(
            [str(CLI), "export", "--data-dir", str(data), "--format", "json"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert export.returncode == 0, export.stderr
    stored = [json.loads(line)["text"] for line in export.stdout.decode().splitlines()]
    missing = [text for text in acked if text not in set(stored)]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"


async def test_a_restarted_room_carries_on_from_its_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "room-data"
    async with serve(tmp_path, "--data-dir", str(data)) as server:
        with trio.fail_after(STEP):
            alice = await Peer.join(server.port, "alice")
            for i in range(3):
                await alice.say(f"before {i}", str(i))
                await alice.expect(Message)
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STEP):
            await server.process.wait()
    async with serve(tmp_path, "--data-dir", str(data)) as server:
        with trio.fail_after(STEP):
            bob = await Peer.open(server.port)
            await bob.send(Hello("bob", PASSWORD, since=1))
            welcome = await bob.next_event()
            replayed = [await bob.expect(Message) for _ in range(2)]
            await bob.say("after", "a")
            echo = await bob.expect(Message)
    assert isinstance(welcome, Welcome) and welcome.seq == 3
    assert [m.text for m in replayed if isinstance(m, Message)] == ["before 1", "before 2"]
    assert isinstance(echo, Message) and echo.seq == 4


async def test_a_corrupt_history_is_one_line_and_nothing_is_overwritten(tmp_path: Path) -> None:
    data = tmp_path / "room-data"
    data.mkdir(mode=0o700)
    history = data / "history.sqlite3"
    history.write_bytes(b"this is not a database" * 100)
    before = history.read_bytes()
    env = os.environ | {"MULTICHAT_PASSWORD": PASSWORD}
    with trio.fail_after(STEP):
        done = await trio.run_process(
            [str(CLI), "serve", "--port", "0", "--data-dir", str(data)],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert done.returncode == 1, done
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multichat: "), done.stderr
    assert history.read_bytes() == before
