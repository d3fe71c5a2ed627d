"""`multichat connect`: ask for what is missing, log in, run the chosen interface, exit.

The terminal interface runs when stdin and stdout are both terminals (not `TERM=dumb`);
otherwise, or with `--plain`, pipe mode does. A wrong password, or a name that is taken or
invalid, is asked again on a terminal; anywhere else it ends the command with its own exit code.
"""

from __future__ import annotations

import getpass
import io
import os
import sys
from functools import partial
from typing import TextIO

import trio

from ..protocol.sanitize import clean_for_terminal
from .address import Address
from .connection import ChatClient
from .login import ClientError, LoginRefused
from .updates import Ending

EXIT_OK = 0  # left, or the room closed, with every line delivered
EXIT_ERROR = 1  # could not connect: refused, unknown host, timed out, not a multichat server
EXIT_USAGE = 2  # a bad address or option, or a name or password needed and no terminal to ask
EXIT_REFUSED = 3  # the room said no: wrong password, name taken or invalid, full, throttled
# The connection was lost and not rebuilt, the room put us out (kicked, banned, flooding), or
# lines typed were not delivered.
EXIT_LOST = 4

# A person gets a few tries at the password and the name; the server throttles guessing anyway.
LOGIN_TRIES = 5
PASSWORD_PROMPT = "Room password: "
NAME_PROMPT = "Your name: "
# Refusals a person can fix by typing something else.
ASK_AGAIN = frozenset({"bad_password", "name_taken", "bad_name"})


class ConnectExit(Exception):
    """End `multichat connect` with one line (the message) and `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _ask(prompt: str, *, secret: bool) -> str:
    """A non-empty answer typed on the terminal."""
    while True:
        try:
            answer = getpass.getpass(prompt) if secret else input(prompt)
        except EOFError:
            raise ConnectExit("no answer; giving up", EXIT_USAGE) from None
        except KeyboardInterrupt:
            print(file=sys.stderr)  # the shell's prompt goes on a line of its own
            raise
        if answer.strip():
            return answer if secret else answer.strip()


def _credentials(name: str | None, password: str | None, *, interactive: bool) -> tuple[str, str]:
    if not interactive and (name is None or password is None):
        missing = [
            option
            for option, value in (
                ("--name (or MULTICHAT_NAME)", name),
                ("--password (or MULTICHAT_PASSWORD)", password),
            )
            if value is None
        ]
        raise ConnectExit(f"no terminal to ask on: pass {' and '.join(missing)}", EXIT_USAGE)
    if password is None:
        password = _ask(PASSWORD_PROMPT, secret=True)
    if name is None:
        name = _ask(NAME_PROMPT, secret=False)
    return name, password


def report(ending: Ending, out: TextIO, err: TextIO) -> int:
    """Say how the session ended, once the interface is gone; return the exit code."""
    reason = clean_for_terminal(ending.reason, single_line=True)
    code = EXIT_OK
    if ending.why == "shutdown":
        print(f"The room closed: {reason}", file=out)
    elif ending.why in ("lost", "kicked"):
        print(f"multichat: {reason}", file=err)
        code = EXIT_LOST
    if ending.unsent:
        lines = "line was" if len(ending.unsent) == 1 else "lines were"
        print(f"multichat: {len(ending.unsent)} {lines} not delivered:", file=err)
        for text in ending.unsent:
            print(f"  {clean_for_terminal(text, single_line=True)}", file=err)
        code = EXIT_LOST
    out.flush()
    return code


async def _session(
    address: Address,
    name: str,
    password: str,
    *,
    plain: bool,
    bell: bool = True,
    room: str | None = None,
) -> Ending:
    """Log in (to `room`, if given), then chat in the terminal interface or in pipe mode until
    the end."""
    client = ChatClient(address, name, password, listener=lambda event: None, room=room)
    await client.join()
    stdin = sys.stdin or io.StringIO()  # no stdin at all (pythonw): nothing to send
    # A dumb terminal (an editor's shell buffer) cannot draw a window; plain lines work there.
    dumb = os.environ.get("TERM") == "dumb"
    if not plain and not dumb and stdin.isatty() and sys.stdout.isatty():
        from .tui import run_tui

        return await run_tui(client, bell=bell)
    from .pipe import run_pipe

    return await run_pipe(client, stdin, sys.stdout)


def run_connect(
    address: Address,
    name: str | None,
    password: str | None,
    *,
    plain: bool,
    bell: bool = True,
    room: str | None = None,
) -> int:
    """Run `multichat connect`; return its exit code, or raise ConnectExit.

    Prompts happen outside trio, so Ctrl-C at a prompt ends the command at once and getpass
    puts the terminal back; each login attempt is its own trio run.
    """
    for stream in (sys.stdin, sys.stdout):
        # A name or message a console cannot encode is shown as "?", never a crash.
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    # An invite's token logs in instead of the password: nothing to ask for.
    secret = "" if address.invite is not None else password or None
    name, password = _credentials(name or None, secret, interactive=interactive)
    for _ in range(LOGIN_TRIES):
        try:
            session = partial(_session, address, name, password, plain=plain, bell=bell, room=room)
            ending = trio.run(session)
        except LoginRefused as exc:
            message = clean_for_terminal(str(exc), single_line=True)
            if not interactive or exc.code not in ASK_AGAIN:
                raise ConnectExit(message, EXIT_REFUSED) from None
            print(f"{message[:1].upper()}{message[1:]}.", file=sys.stderr)
            if exc.code == "bad_password":
                password = _ask(PASSWORD_PROMPT, secret=True)
            else:
                name = _ask(NAME_PROMPT, secret=False)
            continue
        except ClientError as exc:
            raise ConnectExit(clean_for_terminal(str(exc), single_line=True), EXIT_ERROR) from None
        return report(ending, sys.stdout, sys.stderr)
    raise ConnectExit(f"gave up after {LOGIN_TRIES} tries", EXIT_REFUSED)
