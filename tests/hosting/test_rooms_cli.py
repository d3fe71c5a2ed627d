"""Rooms as the host meets them: `serve --room A --room B`, their data directories, a restart,
`open_rooms` in the config file, and the mistakes a host can make, each in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from chatpeer import PASSWORD, Peer
from multichat.hosting.datadir import room_dir
from multichat.protocol.events import (
    Error,
    Hello,
    JoinRoom,
    Message,
    Shutdown,
    Welcome,
)
from servecli import RELAXED_TOML, serve

CLI = Path(sys.executable).parent / "multichat"
STEP = 20


async def run(*args: str, states: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = os.environ | {"MULTICHAT_PASSWORD": PASSWORD}
    if states is not None:  # where `serve` records its rooms, for `status`
        env["MULTICHAT_STATE_DIR"] = str(states)
    with trio.fail_after(STEP):
        return await trio.run_process(
            [str(CLI), *args],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.rstrip("\n")


async def stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(STEP):
        await process.wait()


async def test_each_room_keeps_its_history_beside_the_first_and_carries_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    rooms = ("--room", "den", "--room", "Board Games")
    async with serve(tmp_path, "--data-dir", str(data), *rooms) as server:
        with trio.fail_after(STEP):
            ann = await Peer.join(server.port, "ann")
            bob = await Peer.join(server.port, "bob", room="board games")
            assert bob.welcome is not None and bob.welcome.room == "Board Games"
            await ann.say("den line", "a1")
            for i in range(3):
                await bob.say(f"games {i}", f"b{i}")
                await bob.expect(Message)
            await ann.expect(Message)
            status = await run("status", "--port", str(server.port), states=tmp_path)
            await stop(server.process)
            # Shutdown reaches every room.
            assert await ann.expect(Shutdown) == Shutdown("the host stopped the room")
            assert await bob.expect(Shutdown) == Shutdown("the host stopped the room")
    assert status.returncode == 0, status
    assert "  den (1 online): ann\n  Board Games (1 online): bob\n" in status.stdout.decode()
    # The first room's history where a room's always was; the other's under rooms/.
    (games,) = (data / "rooms").iterdir()
    assert games == room_dir(data, "board games") and games.name.startswith("board-games-")
    assert (data / "history.sqlite3").is_file() and (games / "history.sqlite3").is_file()

    async with serve(tmp_path, "--data-dir", str(data), *rooms) as server:
        with trio.fail_after(STEP):
            back = await Peer.open(server.port)
            await back.send(Hello("bob", PASSWORD, since=1, room="Board Games"))
            welcome = await back.next_event()
            replayed = [await back.expect(Message) for _ in range(2)]
            dan = await Peer.join(server.port, "dan")
            await dan.expect(Message)  # den's history: its own line, not the games'
    assert isinstance(welcome, Welcome) and (welcome.room, welcome.seq) == ("Board Games", 3)
    assert [m.text for m in replayed if isinstance(m, Message)] == ["games 1", "games 2"]
    export = await run("export", "--data-dir", str(games))
    assert export.returncode == 0 and export.stdout.count(b"games ") == 3, export


async def test_open_rooms_in_the_config_lets_a_member_make_one_up_to_max_rooms(
    tmp_path: Path,
) -> None:
    config = tmp_path / "rooms.toml"
    limits = "".join(f"{k} = {v!r}\n" for k, v in (RELAXED_TOML | {"max_rooms": 2}).items())
    config.write_text(f"open_rooms = true\n\n[limits]\n{limits}")
    async with serve(tmp_path, "--ephemeral", "--config", str(config)) as server:
        with trio.fail_after(STEP):
            ann = await Peer.join(server.port, "ann")
            await ann.send(JoinRoom("attic"))
            welcome = await ann.expect(Welcome)
            await ann.send(JoinRoom("cellar"))
            full = await ann.expect(Error)
    assert isinstance(welcome, Welcome) and welcome.room == "attic"
    assert isinstance(full, Error) and full.code == "too_many_rooms"
    # --ephemeral: no room keeps anything, the first or the one a member made.
    data_home = Path(os.environ["XDG_DATA_HOME"])
    assert not any(data_home.rglob("history.sqlite3"))  # noqa: ASYNC240


async def test_a_hosts_mistakes_with_rooms_are_one_line(tmp_path: Path) -> None:
    bad = await run("serve", "--port", "0", "--ephemeral", "--room", "den", "--room", "")
    assert (bad.returncode, one_line(bad)) == (2, "multichat: --room '': room name is empty")
    twice = await run("serve", "--port", "0", "--ephemeral", "--room", "den", "--room", "DEN")
    assert twice.returncode == 2
    assert one_line(twice) == "multichat: --room 'DEN' names the same room as 'den'"
    config = tmp_path / "bad.toml"
    config.write_text('open_rooms = "yes"\n')
    wrong = await run("serve", "--port", "0", "--ephemeral", "--config", str(config))
    assert wrong.returncode == 1
    assert one_line(wrong).endswith("open_rooms must be true or false, not 'yes'")
    config.write_text("[limits]\nmax_rooms = 1\n")
    many = await run(
        "serve", "--port", "0", "--ephemeral", "--config", str(config), "--room", "a", "--room", "b"
    )
    assert many.returncode == 2
    assert one_line(many) == "multichat: 2 rooms, but max_rooms is 1 (see --config)"
