"""What went wrong with ngrok, in words a host can act on.

pyngrok reports failures in many shapes (a startup error with the agent's log lines, an API
error with ngrok's JSON body, an installer error); `classify` turns each into a `TunnelError`
with a stable `code` and a one-line `fix`, using ngrok's own `ERR_NGROK_*` code when there is
one. Nothing here carries the authtoken: ngrok echoes a rejected one back, so `redact` removes
it from every detail kept.
"""

from __future__ import annotations

import os
import re

import trio
from pyngrok.exception import (
    PyngrokError,
    PyngrokNgrokError,
    PyngrokNgrokHTTPError,
    PyngrokNgrokInstallError,
    PyngrokNgrokURLError,
)

PERMANENT = frozenset(
    {
        "no_authtoken",
        "bad_authtoken",
        "card_required",
        "binary_missing",
        "download_failed",
        "config_invalid",
    }
)

_MESSAGES = {
    "no_authtoken": "ngrok needs an authtoken",
    "bad_authtoken": "ngrok rejected the authtoken",
    "card_required": "ngrok's free plan opens TCP endpoints only with a card on file",
    "agent_already_running": "another ngrok agent is already online for this account",
    "endpoint_in_use": "that ngrok address is already online elsewhere",
    "binary_missing": "the ngrok agent is not where we were told to find it",
    "download_failed": "could not download the ngrok agent",
    "config_invalid": "ngrok's config file has settings pyngrok cannot work with",
    "deadline": "ngrok did not answer in time",
    "agent_died": "the ngrok agent stopped",
    "unknown": "ngrok failed",
}

_FIXES = {
    "no_authtoken": (
        "ngrok needs an authtoken: set NGROK_AUTHTOKEN (from "
        "https://dashboard.ngrok.com/get-started/your-authtoken) or run "
        "`ngrok config add-authtoken TOKEN`"
    ),
    "bad_authtoken": (
        "ngrok rejected the authtoken: copy it again from "
        "https://dashboard.ngrok.com/get-started/your-authtoken into NGROK_AUTHTOKEN or "
        "`ngrok config add-authtoken TOKEN`"
    ),
    # Only the TCP endpoint is refused: the HTTPS one opens without a card.
    "card_required": (
        "ngrok's free plan opens TCP endpoints only with a card on file (not charged; add one "
        "at https://dashboard.ngrok.com/settings#id-verification); the room is public over "
        "HTTPS anyway"
    ),
    "agent_already_running": (
        "your ngrok plan allows one agent at a time: stop the other one "
        "(see https://dashboard.ngrok.com/agents) and try again"
    ),
    "endpoint_in_use": (
        "that ngrok address is served by another agent: stop it "
        "(see https://dashboard.ngrok.com/endpoints) or let ngrok pick a new address"
    ),
    "binary_missing": (
        "no ngrok agent at the given path: install ngrok (https://ngrok.com/download) and pass "
        "--ngrok-path PATH"
    ),
    "download_failed": (
        "could not download the ngrok agent (offline?): install ngrok and pass --ngrok-path PATH"
    ),
    "config_invalid": (
        "fix ngrok's config file (`ngrok config check`): pyngrok needs log_format term and "
        "the web_addr API on"
    ),
    "deadline": (
        "ngrok did not answer in time: check the internet connection (or a firewall blocking "
        "ngrok) and try again; the room still works on the LAN"
    ),
    "agent_died": "the ngrok agent stopped unexpectedly: run with --verbose to see its log",
    "unknown": "ngrok failed: run with --verbose to see its log",
}

# ngrok's error codes (https://ngrok.com/docs/errors/) that mean something to the user.
_NGROK_CODES = {
    "ERR_NGROK_4018": "no_authtoken",  # no authtoken configured at all
    "ERR_NGROK_302": "no_authtoken",  # older agents: "TCP tunnels are only available after sign up"
    "ERR_NGROK_105": "bad_authtoken",  # malformed
    "ERR_NGROK_106": "bad_authtoken",  # unknown
    "ERR_NGROK_107": "bad_authtoken",  # revoked or reset
    "ERR_NGROK_8013": "card_required",
    "ERR_NGROK_108": "agent_already_running",
    "ERR_NGROK_334": "endpoint_in_use",
}

_NGROK_CODE = re.compile(r"ERR_NGROK_\d+")
# What pyngrok's config validation complains about.
_CONFIG_KEYS = re.compile(r'"(web_addr|log_format|log_level|ngrok_version)"')
# ngrok repeats the rejected token ("Your authtoken: ..."); the command line carries it too.
_TOKEN_ECHO = re.compile(r"(?i)(authtoken:\s*|authtoken=|--authtoken\s+)(?!https?://)[^\s\\\"']+")


class TunnelError(Exception):
    """ngrok could not give us a public address: `code` is stable, `fix` is one line to act on.

    `ngrok_code` is ngrok's own code (`ERR_NGROK_4018`) if it gave one; `detail` is what ngrok
    and pyngrok said, with the authtoken taken out.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        ngrok_code: str | None = None,
        detail: str = "",
    ) -> None:
        if code not in _FIXES:
            raise ValueError(f"unknown tunnel error code {code!r}")
        text = message or _MESSAGES[code]
        super().__init__(f"{text} ({ngrok_code})" if ngrok_code else text)
        self.code = code
        self.ngrok_code = ngrok_code
        self.detail = detail

    @property
    def fix(self) -> str:
        """One short line telling the user what to do about it."""
        return _FIXES[self.code]

    @property
    def permanent(self) -> bool:
        """Whether retrying is pointless until the user acts."""
        return self.code in PERMANENT


def redact(text: str, authtoken: str | None = None) -> str:
    """`text` without `authtoken`, nor any value ngrok labels as an authtoken."""
    if authtoken:
        text = text.replace(authtoken, "[authtoken]")
    return _TOKEN_ECHO.sub(r"\1[authtoken]", text)


def classify(exc: BaseException, *, authtoken: str | None = None) -> TunnelError:
    """Map a pyngrok (or OS, or trio deadline) exception to a `TunnelError`.

    ngrok's `ERR_NGROK_*` code decides when there is one, wherever pyngrok put it: the message,
    `ngrok_error`, the agent's log lines, or the API's response body.
    """
    if isinstance(exc, TunnelError):
        return exc
    if isinstance(exc, trio.TooSlowError):
        return TunnelError("deadline")
    detail = redact(_evidence(exc), authtoken or os.environ.get("NGROK_AUTHTOKEN"))
    match = _NGROK_CODE.search(detail)
    ngrok_code = match.group(0) if match else None
    if ngrok_code in _NGROK_CODES:
        return TunnelError(_NGROK_CODES[ngrok_code], ngrok_code=ngrok_code, detail=detail)
    if isinstance(exc, PyngrokNgrokInstallError):
        return TunnelError("download_failed", detail=detail)
    if isinstance(exc, (FileNotFoundError, PermissionError)) or (
        isinstance(exc, PyngrokNgrokError) and "binary was not found" in str(exc)
    ):
        return TunnelError("binary_missing", detail=detail)
    if isinstance(exc, PyngrokNgrokURLError) or (
        isinstance(exc, PyngrokNgrokError)
        and not isinstance(exc, PyngrokNgrokHTTPError)
        and exc.ngrok_error is None
        and "unable to start" in str(exc)
    ):
        return TunnelError("agent_died", ngrok_code=ngrok_code, detail=detail)
    if type(exc) is PyngrokError and _CONFIG_KEYS.search(str(exc)):
        return TunnelError("config_invalid", detail=detail)
    return TunnelError("unknown", ngrok_code=ngrok_code, detail=detail)


def _evidence(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    if isinstance(exc, PyngrokNgrokError):
        if exc.ngrok_error:
            parts.append(exc.ngrok_error)
        parts += [log.line for log in exc.ngrok_logs if log.lvl in ("ERROR", "CRITICAL")]
    if isinstance(exc, PyngrokNgrokHTTPError):
        parts.append(exc.body)
    # ngrok's logfmt escapes its newlines; undo that so the detail reads as ngrok wrote it.
    return "\n".join(parts).replace("\\r\\n", "\n").replace("\\n", "\n")
