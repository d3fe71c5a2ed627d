"""The typer app as a user meets it first: `--help` of every command, in a subprocess."""

from __future__ import annotations

import os
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
