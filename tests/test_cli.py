"""The typer app as a user meets it first: `--help` of every command, in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

MULTICHAT = Path(sys.executable).parent / "multichat"


def help_text(*command: str) -> str:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [str(MULTICHAT), *command, "--help"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("serve", ["MULTICHAT_PASSWORD", "MULTICHAT_STATE_DIR"]),
        ("up", ["NGROK_AUTHTOKEN", "MULTICHAT_PASSWORD", "MULTICHAT_STATE_DIR"]),
        ("tunnel", ["NGROK_AUTHTOKEN"]),
        ("status", ["MULTICHAT_STATE_DIR"]),
        ("down", ["MULTICHAT_STATE_DIR"]),
        ("connect", ["MULTICHAT_NAME", "MULTICHAT_PASSWORD"]),
    ],
)
def test_help_names_every_environment_variable_the_command_reads(
    command: str, variables: list[str]
) -> None:
    text = help_text(command)
    for variable in variables:
        assert variable in text, f"{command} --help does not mention {variable}"


@pytest.mark.parametrize("command", ["serve", "up"])
def test_help_shows_brackets_as_written(command: str) -> None:
    assert "[limits] table" in help_text(command)


def modules_loaded(code: str) -> set[str]:
    """The top-level names in sys.modules once `code` has run in a fresh Python (even if it
    exits), with multichat's own modules by their full names."""
    report = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('\\n'.join(sys.modules), file=sys.stderr))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", report + code], capture_output=True, text=True, timeout=60
    )
    return {
        line if line.startswith("multichat") else line.partition(".")[0]
        for line in done.stderr.splitlines()
    }


def test_connect_loads_neither_the_server_nor_the_tunnel_nor_redis() -> None:
    # A friend's `multichat connect` starts in half the time when the app's other commands
    # import their wings as they run (about 0.5 s against 1.3 s here).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    loaded = modules_loaded(
        "from multichat.cli import main\n"
        f"sys.argv = ['multichat', 'connect', '127.0.0.1:{port}', '--plain', '-n', 'a']\n"
        "main()\n"
    )
    assert "multichat.client.connect" in loaded  # the command did run
    for heavy in ("multichat.server.listeners", "multichat.hosting.launcher", "pyngrok", "coredis"):
        assert heavy not in loaded


def test_only_a_server_with_a_backplane_loads_redis_client() -> None:
    serve = (
        "from multichat.server.backplane_address import parse_address\n"
        "from multichat.server.listeners import ChatServer\n"
        "import multichat.cli.settings, multichat.hosting.launcher\n"
    )
    alone = modules_loaded(serve + "ChatServer('pw')\n")
    assert "multichat.server.listeners" in alone
    assert "coredis" not in alone
    shared = modules_loaded(
        serve + "ChatServer('pw', backplane=parse_address('redis://127.0.0.1:1'))\n"
    )
    assert "coredis" in shared


def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source() -> None:
    # typer keeps a docstring's line breaks; wrapped again at 80 columns, `up`'s second
    # paragraph came out as "... (for browsers and `multichat connect`)" / "and, when" / ...
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    done = subprocess.run(
        [str(MULTICHAT), "up", "--help"], env=env, capture_output=True, text=True, timeout=30
    )
    description = done.stdout.split("╭")[0]  # before the first box: the docstring's text
    paragraphs: list[list[str]] = [[]]
    for line in description.splitlines():  # (rich pads even blank lines to the width)
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [lines for lines in paragraphs if lines]
    assert len(paragraphs) >= 3, description  # usage, summary, and the paragraph below
    for lines in paragraphs:
        # Every line but a paragraph's last is filled nearly to the width before it breaks.
        assert all(len(line.strip()) > 60 for line in lines[:-1]), lines
