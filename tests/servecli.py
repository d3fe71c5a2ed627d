"""The real `multichat serve` in a subprocess, on a loopback port the kernel picks.

Every client in the tests is on 127.0.0.1, so `serve` writes a `--config` file that lifts the
per-source and flood limits (RELAXED_TOML), and only those, unless a test asks for others.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from chatpeer import PASSWORD

CLI = Path(sys.executable).parent / "multichat"
RELAXED_TOML = {
    "connections_per_source": 100_000,
    "unauthenticated_per_source": 100_000,
    "unauthenticated_total": 100_000,
    "flood_per_second": 0,
    "failed_passwords_per_minute": 1000,
    "failed_passwords_global_per_minute": 1000,
}
SERVING = re.compile(rb"serving room .* on port (\d+)")


@dataclass
class Server:
    process: trio.Process
    port: int
    log: bytearray = field(default_factory=bytearray)

    def rss_kib(self, key: str = "VmRSS") -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))


@asynccontextmanager
async def serve(
    tmp_path: Path,
    *args: str,
    config_name: str = "limits.toml",
    more_config: str = "",
    env: Mapping[str, str] | None = None,
    **limits: float,
) -> AsyncIterator[Server]:
    """`multichat serve ARGS` on a loopback port the kernel picks; killed if the test fails.

    `more_config` is appended to the config file (another table); `env` adds variables."""
    config = tmp_path / config_name
    table = RELAXED_TOML | limits
    config.write_text(
        "[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in table.items()) + more_config
    )
    base = {"MULTICHAT_PASSWORD": PASSWORD, "MULTICHAT_STATE_DIR": str(tmp_path)}
    env = os.environ | base | dict(env or {})
    command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", "0", "--config", str(config)]
    command += args
    process = await trio.lowlevel.open_process(
        command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            stderr = process.stderr

            async def read_log(task_status: trio.TaskStatus[int]) -> None:
                started = False
                while chunk := await stderr.receive_some(65536):
                    log.extend(chunk)
                    if not started and (match := SERVING.search(log)):
                        started = True
                        task_status.started(int(match.group(1)))
                assert started, log.decode()

            with trio.fail_after(20):
                port = await nursery.start(read_log)
            try:
                yield Server(process, port, log)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()  # this process only, by its pid
            with trio.move_on_after(5):
                await process.wait()
