"""A stand-in ngrok v3 agent for tests, and helpers to point pyngrok at it.

`agent.py` says what the stand-in speaks; `NGROK` is its executable. Tests pass `NGROK` as the
ngrok path (so pyngrok never downloads anything), a config made by `write_config`, and set the
switches below in the environment, which the agent pyngrok starts inherits. Its https endpoints
need a certificate: `make_tls` makes one (and the CA a client trusts) with trustme.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

NGROK = Path(__file__).resolve().with_name("ngrok")

FAIL_ENV = "STANDIN_NGROK_FAIL"  # one of agent.FAILURES
DIE_AFTER_ENV = "STANDIN_NGROK_DIE_AFTER"  # seconds after startup at which the agent dies
PIDFILE_ENV = "STANDIN_NGROK_PIDFILE"  # the latest agent writes its pid here
STATE_ENV = "STANDIN_NGROK_STATE"  # every agent appends `started pid=N`, `exited pid=N ...`
LIFETIME_ENV = "STANDIN_NGROK_LIFETIME"  # hard cap on an agent's life, in seconds
TLS_CERT_ENV = "STANDIN_NGROK_TLS_CERT"  # the https endpoints' certificate chain (PEM)
TLS_KEY_ENV = "STANDIN_NGROK_TLS_KEY"  # and its private key (PEM)
SWITCHES = (
    FAIL_ENV,
    DIE_AFTER_ENV,
    PIDFILE_ENV,
    STATE_ENV,
    LIFETIME_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
)

# What the stand-in's https endpoints answer with, as agent.py says.
SKIP_WARNING_HEADER = "ngrok-skip-browser-warning"
INTERSTITIAL_COOKIE = "abuse_interstitial"
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)


@dataclass(frozen=True)
class StandinTLS:
    """A test CA and the certificate the stand-in's https endpoints serve (localhost)."""

    ca_file: Path  # what a client trusts: pass to `ssl_context` or SSL_CERT_FILE
    cert_file: Path
    key_file: Path

    def env(self) -> dict[str, str]:
        """The switches that give the stand-in its certificate."""
        return {TLS_CERT_ENV: str(self.cert_file), TLS_KEY_ENV: str(self.key_file)}

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA, and nothing else."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(directory: Path) -> StandinTLS:
    """A fresh CA, and a certificate from it for localhost and 127.0.0.1, written to files."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    tls = StandinTLS(
        ca_file=directory / "standin-ca.pem",
        cert_file=directory / "standin-cert.pem",
        key_file=directory / "standin-key.pem",
    )
    ca.cert_pem.write_to_path(str(tls.ca_file))
    leaf.private_key_pem.write_to_path(str(tls.key_file))
    for index, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(tls.cert_file), append=index > 0)
    return tls


def ngrok_path() -> str:
    """The stand-in's executable, as a string for `ngrok_path`."""
    return str(NGROK)


def write_config(directory: Path, *, authtoken: str | None = None) -> Path:
    """Write an ngrok v3 config whose API listens on an ephemeral loopback port."""
    lines = ['version: "3"', "agent:", "  web_addr: 127.0.0.1:0"]
    if authtoken is not None:
        lines.append(f"  authtoken: {authtoken}")
    path = directory / "ngrok.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_pid(pidfile: Path) -> int | None:
    """The pid the latest agent wrote, if any."""
    try:
        return int(pidfile.read_text(encoding="utf-8").split()[0])
    except (OSError, IndexError, ValueError):
        return None


def started_pids(statefile: Path) -> list[int]:
    """Every agent pid the state file saw start, oldest first."""
    try:
        text = statefile.read_text(encoding="utf-8")
    except OSError:
        return []
    return [int(pid) for pid in re.findall(r"^started pid=(\d+)", text, re.MULTILINE)]


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def kill_agents(statefile: Path) -> None:
    """SIGKILL every agent the state file saw start that is still running: test cleanup."""
    for pid in started_pids(statefile):
        if pid_alive(pid) and _is_standin(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_standin(pid: int) -> bool:
    # A pid is only ever reused after its process is gone; never signal a stranger that got it.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(NGROK).encode() in cmdline
