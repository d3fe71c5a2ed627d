"""A stand-in for the ngrok v3 agent that pyngrok drives exactly as it drives the real one.

Test code, pure stdlib, loopback only. It speaks what pyngrok 9 uses of the agent:

- `start --none --log stdout [--config PATH] [--authtoken TOKEN] [--region R]`: logfmt lines
  on stdout (`starting web service ... addr=127.0.0.1:PORT`, `client session established`,
  `tunnel session started`), then the local API until SIGTERM/SIGINT;
- `--version` / `version`, `config add-authtoken TOKEN`, `config check`, `update`;
- the local API: `GET /api/`, `GET|POST /api/endpoints` (v3), `GET|POST /api/tunnels` (v2),
  `GET|DELETE /api/endpoints/NAME` and `/api/tunnels/NAME`.

Endpoints really forward, each from an ephemeral 127.0.0.1 "public" port:

- TCP (v3 `url: tcp://`, v2 `proto: tcp`): the public URL is `tcp://127.0.0.1:PORT`, and each
  connection is piped both ways to the upstream address, after a PROXY protocol v1 or v2 header
  carrying the real client's address when asked for (`upstream.proxy_protocol` in v3,
  `proxy_proto` in v2; "1", "2", 1 or 2), as ngrok does.
- HTTPS (v3 with no `url` or `url: https://`, v2 `proto: http`): the public URL is
  `https://localhost:PORT`, TLS with the test's certificate (below). Each request goes to the
  upstream (`http://HOST:PORT`, `HOST:PORT` or `PORT`) as ngrok sends it: Host unchanged,
  `X-Forwarded-For` with the client's address appended to any the client sent,
  `X-Forwarded-Proto: https`, `X-Forwarded-Host`. A WebSocket upgrade is forwarded, then piped
  both ways. One request per connection (`Connection: close` upstream), so that every request
  meets the rules below. ngrok's own pages carry `Ngrok-Error-Code`:
  - the free plan's browser warning (ERR_NGROK_6024, status 200): served instead of the site to
    a request whose User-Agent starts with `Mozilla/` and that has neither a
    `ngrok-skip-browser-warning` header (any value) nor the `abuse_interstitial=HOST` cookie
    that the page's "Visit Site" button sets (in the browser, by script) before reloading;
  - an upstream that cannot be dialled: 502, ERR_NGROK_8012, in the agent's words.

The account is a free one (every https endpoint gets the browser warning); without a card on
file it is refused TCP endpoints (`card_required`), and https endpoints still open, as on
ngrok's free plan.

Switches, read from the environment:

- `STANDIN_NGROK_FAIL`: one of `FAILURES`, each reported with the real agent's error code and
  words (`no_authtoken` also happens by itself when no authtoken is configured at all);
- `STANDIN_NGROK_TLS_CERT`, `STANDIN_NGROK_TLS_KEY`: PEM files (certificate chain, private key)
  the https endpoints serve, for a name that covers `localhost`; tests make them with trustme
  (`ngrok_standin.make_tls`). Without them an https endpoint is refused (the stand-in cannot
  make a certificate with the standard library alone);
- `STANDIN_NGROK_DIE_AFTER`: seconds after startup at which the agent dies without a word;
- `STANDIN_NGROK_PIDFILE`: our pid is written here at start;
- `STANDIN_NGROK_STATE`: one line appended per lifecycle event (`started pid=N`, `endpoint ...`,
  `refused name=NAME err=ERR_NGROK_N`, `exited pid=N reason=...`), so a test can find every
  agent it caused to start, and what each was asked for;
- `STANDIN_NGROK_LIFETIME`: hard cap on our life in seconds (default 120), so that a leaked
  stand-in cannot outlive a test run; we also exit when our parent goes away.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import ipaddress
import json
import os
import re
import secrets
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

VERSION = "3.24.0-standin"

FAILURES = (
    "no_authtoken",  # ERR_NGROK_4018 at session start
    "bad_authtoken",  # ERR_NGROK_105 at session start
    "agent_already_running",  # ERR_NGROK_108 at session start
    "card_required",  # ERR_NGROK_8013 when a TCP endpoint is requested; https ones still open
    "endpoint_in_use",  # ERR_NGROK_334 when any endpoint is requested
    "silent",  # starts, then never prints a line and never serves the API
    "silent_api",  # prints the startup lines, but the API accepts and never answers
    "silent_tcp",  # answers everything but a request for a TCP endpoint, which hangs
)

DEFAULT_LIFETIME = 120.0  # longer than any test; a leak dies on its own
PARENT_CHECK_INTERVAL = 0.2  # how quickly we notice our parent (the test run) is gone
PIPE_CHUNK = 64 * 1024
# The real agent's round trip to ngrok's cloud before it knows how the session went. pyngrok
# stops reading at the first line after which the agent has exited, so an agent that printed
# its failure and exited within microseconds of "starting web service" would hide the failure.
SESSION_LATENCY = 0.1
UPSTREAM_CONNECT_TIMEOUT = 5.0  # the upstream is on this machine: it answers at once or never
TLS_CERT_ENV = "STANDIN_NGROK_TLS_CERT"
TLS_KEY_ENV = "STANDIN_NGROK_TLS_KEY"
HTTPS_HOST = "localhost"  # the https endpoints' public host name, as the test certificate names it
MAX_REQUEST_HEAD = 64 * 1024  # a browser's request head is a few KiB; this is not a test of limits
HTTP_HEAD_TIMEOUT = 10.0  # the TLS handshake and a request head: a test client sends both at once
SKIP_WARNING_HEADER = "ngrok-skip-browser-warning"
INTERSTITIAL_COOKIE = "abuse_interstitial"  # its value is the host name the warning was for
INTERSTITIAL_MAX_AGE = 24 * 3600  # users report seeing ngrok's warning again after a day

# The real agent's words (ngrok 3.x, as pyngrok users report them), "\r\n\r\nERR_NGROK_N\r\n"
# included: clients find the code by searching for ERR_NGROK_.
MSG_4018 = (
    "authentication failed: Usage of ngrok requires a verified account and authtoken.\n\n"
    "Sign up for an account: https://dashboard.ngrok.com/signup\n"
    "Install your authtoken: https://dashboard.ngrok.com/get-started/your-authtoken"
    "\r\n\r\nERR_NGROK_4018\r\n"
)
MSG_105 = (
    "authentication failed: The authtoken you specified does not look like a proper ngrok "
    "tunnel authtoken.\nYour authtoken: {token}\n"
    "Instructions to install your authtoken are on your ngrok dashboard:\n"
    "https://dashboard.ngrok.com/get-started/your-authtoken\r\n\r\nERR_NGROK_105\r\n"
)
MSG_108 = (
    "authentication failed: Your account is limited to 1 simultaneous ngrok agent sessions.\n"
    "Run multiple endpoints at the same time from a single agent by defining them in your agent "
    "configuration file and running `ngrok start --all`.\n"
    "Read more about the agent configuration file: https://ngrok.com/docs/agent/config/\n"
    "You can view your current agent sessions in the dashboard: https://dashboard.ngrok.com/agents"
    "\r\n\r\nERR_NGROK_108\r\n"
)
MSG_8013 = (
    "failed to start tunnel: You must add a credit or debit card before you can use TCP "
    "endpoints on a free account. We require a valid card as a way to combat abuse and keep the "
    "internet a safe place. This card will NOT  be charged.\n"
    "Add a card to your account here: https://dashboard.ngrok.com/settings#id-verification"
    "\r\n\r\nERR_NGROK_8013\r\n"
)
MSG_334 = (
    "failed to start tunnel: The endpoint '{url}' is already online. Either\n"
    "1. stop your existing endpoint first, or\n"
    "2. start both endpoints with `--pooling-enabled` to load balance between them."
    "\r\n\r\nERR_NGROK_334\r\n"
)

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# --------------------------------------------------------------------------- logging


def _logfmt_value(value: str) -> str:
    if value and not re.search(r'[\s="\\]', value) and value.isprintable():
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


_stdout_lock = threading.Lock()


def log(lvl: str, msg: str, **fields: object) -> None:
    """Print one logfmt line the way the agent does with `--log stdout`."""
    parts = [f"t={time.strftime('%Y-%m-%dT%H:%M:%S%z')}", f"lvl={lvl}", f"msg={_logfmt_value(msg)}"]
    parts += [f"{key}={_logfmt_value(str(value))}" for key, value in fields.items()]
    with _stdout_lock:
        try:
            sys.stdout.write(" ".join(parts) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody reads our log any more; the real agent carries on too


def record_state(line: str) -> None:
    path = os.environ.get("STANDIN_NGROK_STATE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------- config


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ngrok", "ngrok.yml")


def read_config_value(path: str, key: str) -> str | None:
    """The value of `key:` anywhere in a v2 or v3 YAML config; no YAML parser in stdlib."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(rf"^\s*{re.escape(key)}:\s*(.*?)\s*$", text, re.MULTILINE)
    if match is None:
        return None
    value = match.group(1).strip().strip("'\"")
    return value or None


def save_authtoken(path: str, token: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = ['version: "3"']
    lines = [line for line in lines if not re.match(r"^\s*authtoken:", line)]
    if not any(re.match(r"^agent:\s*$", line) for line in lines):
        lines.append("agent:")
    index = next(i for i, line in enumerate(lines) if re.match(r"^agent:\s*$", line))
    lines.insert(index + 1, f"  authtoken: {token}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- PROXY protocol


def proxy_header(version: int, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """A PROXY protocol header (haproxy's proxy-protocol.txt) for a TCP connection src -> dst."""
    src_ip = ipaddress.ip_address(src[0])
    dst_ip = ipaddress.ip_address(dst[0])
    if src_ip.version != dst_ip.version:  # a v4 client seen through a dual-stack socket
        src_ip = getattr(src_ip, "ipv4_mapped", None) or src_ip
        dst_ip = getattr(dst_ip, "ipv4_mapped", None) or dst_ip
    if version == 1:
        family = "TCP4" if src_ip.version == 4 else "TCP6"
        return f"PROXY {family} {src_ip} {dst_ip} {src[1]} {dst[1]}\r\n".encode("ascii")
    if src_ip.version == 4:
        fam, body = 0x11, src_ip.packed + dst_ip.packed
    else:
        fam, body = 0x21, src_ip.packed + dst_ip.packed
    body += struct.pack("!HH", src[1], dst[1])
    return PROXY_V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def parse_proxy_version(value: object) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    if value in (1, "1", 2, "2"):
        return int(str(value))
    raise ValueError(f"invalid proxy protocol version {value!r}: must be 1 or 2")


# --------------------------------------------------------------------------- endpoints


@dataclass
class Endpoint:
    name: str
    proto: str  # "tcp" or "https"
    upstream: str  # as given: host:port, or http://host:port
    proxy_proto: int | None
    listener: socket.socket
    raw_upstream: dict[str, Any]
    tls: ssl.SSLContext | None = None  # https endpoints only
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    conns: int = 0

    @property
    def public_url(self) -> str:
        host, port = self.listener.getsockname()[:2]
        if self.proto == "https":
            return f"https://{HTTPS_HOST}:{port}"
        return f"tcp://{host}:{port}"

    def as_endpoint(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "uri": f"/api/endpoints/{self.name}",
            "url": self.public_url,
            "upstream": self.raw_upstream,
            "metrics": {"conns": {"count": self.conns, "gauge": 0}},
        }

    def as_tunnel(self) -> dict[str, Any]:
        config: dict[str, Any] = {"addr": self.upstream, "inspect": self.proto != "tcp"}
        if self.proxy_proto:
            config["proxy_proto"] = str(self.proxy_proto)
        return {
            "ID": self.id,
            "name": self.name,
            "uri": f"/api/tunnels/{self.name}",
            "public_url": self.public_url,
            "proto": self.proto,
            "config": config,
            "metrics": {"conns": {"count": self.conns, "gauge": 0}},
        }


def upstream_address(url: str) -> tuple[str, int]:
    """ngrok's upstream forms: `8080`, `host:8080`, `tcp://host:8080`, `http://host:8080`."""
    text = str(url).strip()
    if text.isdigit():
        return "localhost", int(text)
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "http") or parts.hostname is None:
        raise ValueError(f"invalid upstream address {url!r}")
    if parts.port is None:
        if parts.scheme != "http":
            raise ValueError(f"invalid upstream address {url!r}")
        return parts.hostname, 80
    return parts.hostname, parts.port


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(PIPE_CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def serve_connection(endpoint: Endpoint, client: socket.socket) -> None:
    with client:
        host, port = upstream_address(endpoint.upstream)
        try:
            upstream = socket.create_connection((host, port), timeout=UPSTREAM_CONNECT_TIMEOUT)
        except OSError as exc:
            log(
                "warn",
                "failed to open private leg",
                obj="tunnels",
                id=endpoint.id,
                privaddr=endpoint.upstream,
                err=f"dial tcp {host}:{port}: {exc}",
            )
            return
        with upstream:
            upstream.settimeout(None)
            if endpoint.proxy_proto:
                src = client.getpeername()[:2]
                dst = client.getsockname()[:2]
                upstream.sendall(proxy_header(endpoint.proxy_proto, src, dst))
            back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
            back.start()
            pipe(client, upstream)
            back.join()


def accept_loop(endpoint: Endpoint) -> None:
    serve = serve_http_connection if endpoint.proto == "https" else serve_connection
    while True:
        try:
            client, _ = endpoint.listener.accept()
        except OSError:
            return  # closed by DELETE or shutdown
        endpoint.conns += 1
        threading.Thread(target=serve, args=(endpoint, client), daemon=True).start()


# --------------------------------------------------------------------------- HTTPS endpoints


def load_tls() -> ssl.SSLContext | None:
    """The TLS context https endpoints serve with, from the test's cert and key; None without."""
    cert, key = os.environ.get(TLS_CERT_ENV), os.environ.get(TLS_KEY_ENV)
    if not cert or not key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    # ngrok's edge speaks HTTP/2 too; the stand-in parses HTTP/1.1 only, so it offers only that.
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass
class Request:
    """One HTTP/1.1 request head, headers in the order and case the client sent them."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {name.lower() for name in names}
        return [(key, value) for key, value in self.headers if key.lower() not in drop]

    @property
    def is_upgrade(self) -> bool:
        tokens = {t.strip().lower() for value in self.get("connection") for t in value.split(",")}
        return "upgrade" in tokens and self.first("upgrade") is not None

    def host_name(self) -> str:
        host = self.first("host") or ""
        if host.startswith("["):
            return host[1 : host.find("]")]
        return host.rpartition(":")[0] if ":" in host else host

    def has_cookie(self, name: str, value: str) -> bool:
        for header in self.get("cookie"):
            for pair in header.split(";"):
                key, _, found = pair.strip().partition("=")
                if key == name and found.strip('"') == value:
                    return True
        return False


def read_head(sock: socket.socket) -> tuple[Request, bytes] | None:
    """A request head from `sock`, and whatever of the body came with it; None if none came."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_HEAD:
            return None
        try:
            chunk = sock.recv(PIPE_CHUNK)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return None
            headers.append((name, value.strip()))
    except ValueError:
        return None
    return Request(method, target, version, headers), rest


def encode_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_page(sock: socket.socket, status: str, code: str, page: str) -> None:
    """One of ngrok's own pages (an error or the browser warning), then close."""
    body = page.encode("utf-8")
    head = encode_head(
        f"HTTP/1.1 {status}",
        [
            ("Content-Type", "text/html"),
            ("Content-Length", str(len(body))),
            ("Ngrok-Error-Code", code),  # what ngrok marks its own pages with
            ("Connection", "close"),
        ],
    )
    with contextlib.suppress(OSError):
        sock.sendall(head + body)


def interstitial_page(host: str, serving_ip: str) -> str:
    # ngrok's ERR_NGROK_6024 page, in its words: the warning, the Visit Site button (which sets
    # the cookie and reloads, in the browser), and the note for the developer.
    host_html, ip_html = html.escape(host), html.escape(serving_ip)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>ngrok - Visit Site</title></head>
<body>
<main>
<h1>You are about to visit: {host_html}</h1>
<p>Website IP: {ip_html}</p>
<ul>
<li>This website is served for free through ngrok.com.</li>
<li>You should only visit this website if you trust whoever sent the link to you.</li>
<li>Be careful about disclosing personal or financial information like passwords, phone
numbers, or credit cards.</li>
</ul>
<button id="visit-site" type="button">Visit Site</button>
<h2>Are you the developer?</h2>
<p>We display this page to prevent abuse. Visitors to your site will only see it once.</p>
<p>To remove this page:</p>
<ul>
<li>Set and send an <code>{SKIP_WARNING_HEADER}</code> request header with any value.</li>
<li>Or, set and send a custom/non-standard browser <code>User-Agent</code> request header.</li>
<li>Or, please upgrade to any paid ngrok account.</li>
</ul>
<p>ERR_NGROK_6024</p>
</main>
<script>
document.getElementById("visit-site").addEventListener("click", function () {{
  document.cookie = "{INTERSTITIAL_COOKIE}=" + location.hostname +
    "; path=/; max-age={INTERSTITIAL_MAX_AGE}; secure; samesite=none";
  location.reload();
}});
</script>
</body>
</html>
"""


def upstream_error_page(upstream: str, error: str) -> str:
    # The agent's words, each sentence on one line as it sends them.
    where = html.escape(upstream)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n'
        '<head><meta charset="utf-8"><title>ngrok - ERR_NGROK_8012</title></head>\n'
        "<body>\n<main>\n<h1>ERR_NGROK_8012</h1>\n"
        "<p>Traffic was successfully tunneled to the ngrok agent, but the agent failed to "
        f"establish a connection to the upstream web service at {where}. "
        "The error encountered was:</p>\n"
        f"<p><code>{html.escape(error)}</code></p>\n"
        '<p><a href="https://ngrok.com/docs/errors/err_ngrok_8012">'
        "Get help with this error</a></p>\n"
        "</main>\n</body>\n</html>\n"
    )


def dial_error(host: str, port: int, exc: OSError) -> str:
    """How Go's net.Dial words a failure, as the real agent reports it."""
    reason = (exc.strerror or str(exc)).lower()
    return f"dial tcp {host}:{port}: connect: {reason}"


def looks_like_a_browser(request: Request) -> bool:
    # Every mainstream browser's User-Agent starts so; ngrok's docs say a custom one skips it.
    return (request.first("user-agent") or "").startswith("Mozilla/")


def serve_http_connection(endpoint: Endpoint, raw: socket.socket) -> None:
    """One client of an https endpoint: TLS, then one request (or one upgraded connection)."""
    assert endpoint.tls is not None
    with raw:
        raw.settimeout(HTTP_HEAD_TIMEOUT)
        try:
            client_ip, serving_ip = raw.getpeername()[0], raw.getsockname()[0]
            client = endpoint.tls.wrap_socket(raw, server_side=True)
        except OSError:
            return  # a failed handshake: the real edge just drops it too
        with client:
            head = read_head(client)
            if head is None:
                return
            request, body = head
            if (
                looks_like_a_browser(request)
                and request.first(SKIP_WARNING_HEADER) is None
                and not request.has_cookie(INTERSTITIAL_COOKIE, request.host_name())
            ):
                page = interstitial_page(request.first("host") or "", serving_ip)
                send_page(client, "200 OK", "ERR_NGROK_6024", page)
                return
            host, port = upstream_address(endpoint.upstream)
            try:
                upstream = socket.create_connection((host, port), timeout=UPSTREAM_CONNECT_TIMEOUT)
            except OSError as exc:
                error = dial_error(host, port, exc)
                log(
                    "warn",
                    "failed to open private leg",
                    obj="tunnels",
                    id=endpoint.id,
                    privaddr=f"{host}:{port}",
                    err=error,
                )
                page = upstream_error_page(f"{host}:{port}", error)
                send_page(client, "502 Bad Gateway", "ERR_NGROK_8012", page)
                return
            with upstream:
                client.settimeout(None)
                upstream.settimeout(None)
                upstream.sendall(forwarded_head(request, client_ip) + body)
                pipe_both(client, upstream)


def forwarded_head(request: Request, client_ip: str) -> bytes:
    """The request as the upstream gets it: ngrok's X-Forwarded-* headers, Host unchanged."""
    # ngrok appends the client's address to any X-Forwarded-For the client sent itself.
    forwarded_for = ", ".join([*request.get("x-forwarded-for"), client_ip])
    headers = request.without("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
    if not request.is_upgrade:
        # One request per connection keeps every request under the rules above (the browser
        # warning, the headers); a client that wants another one connects again.
        headers = [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive")]
        headers.append(("Connection", "close"))
    headers += [
        ("X-Forwarded-For", forwarded_for),
        ("X-Forwarded-Host", request.first("host") or ""),
        ("X-Forwarded-Proto", "https"),
    ]
    return encode_head(f"{request.method} {request.target} {request.version}", headers)


def pipe_both(client: ssl.SSLSocket, upstream: socket.socket) -> None:
    """Relay both ways until the upstream is done (one thread: an SSL socket is not shared)."""
    client_open = True
    while True:
        if client_open and client.pending():
            ready = [client]
        else:
            watched = [client, upstream] if client_open else [upstream]
            try:
                ready, _, _ = select.select(watched, [], [])
            except (OSError, ValueError):
                return
        for sock in ready:
            try:
                data = sock.recv(PIPE_CHUNK)
            except OSError:
                data = b""
            if sock is upstream:
                if not data:
                    return  # the response is complete, or the upgraded connection closed
                try:
                    client.sendall(data)
                except OSError:
                    return
            elif data:
                try:
                    upstream.sendall(data)
                except OSError:
                    return
            else:
                client_open = False
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)


# --------------------------------------------------------------------------- the agent


class Agent:
    def __init__(self, fail: str | None, authtoken: str | None) -> None:
        self.fail = fail
        self.authtoken = authtoken
        self.endpoints: dict[str, Endpoint] = {}
        self.lock = threading.Lock()
        self.tls = load_tls()

    def create(self, body: dict[str, Any], *, v3: bool) -> tuple[int, dict[str, Any]]:
        if v3:
            raw_upstream = body.get("upstream") or {}
            if not isinstance(raw_upstream, dict):
                raw_upstream = {"url": raw_upstream}
            addr = raw_upstream.get("url")
            url = str(body.get("url") or "")
            # No url: ngrok gives the endpoint a random https:// address.
            proto = url.split("://", 1)[0] if "://" in url else ("tcp" if url else "https")
            proxy = raw_upstream.get("proxy_protocol", body.get("proxy_proto"))
        else:
            addr = body.get("addr")
            proto = str(body.get("proto") or "http")
            # A v2 http tunnel is served on https:// (bind_tls defaults to true in ngrok 3).
            proto = "https" if proto == "http" else proto
            proxy = body.get("proxy_proto")
            raw_upstream = {"url": addr}
        name = str(body.get("name") or f"{proto}-{secrets.token_hex(4)}")
        if proto not in ("tcp", "https"):
            return 400, invalid(f"the stand-in serves tcp and https endpoints, not {proto!r}")
        if proto == "tcp" and self.fail == "silent_tcp":
            threading.Event().wait()  # this request's thread only; a daemon, gone at exit
        if proto == "tcp" and self.fail == "card_required":
            return 502, failed_to_start(MSG_8013, name)
        if self.fail == "endpoint_in_use":
            return 502, failed_to_start(MSG_334.format(url=body.get("url") or f"{proto}://"), name)
        if proto == "https" and self.tls is None:
            missing = f"the stand-in needs {TLS_CERT_ENV} and {TLS_KEY_ENV} for https endpoints"
            return 502, failed_to_start(missing, name)
        try:
            proxy_proto = parse_proxy_version(proxy)
            upstream_address(str(addr))
        except ValueError as exc:
            return 400, invalid(str(exc))
        if proto == "https" and proxy_proto is not None:
            return 400, invalid("proxy_protocol is for tcp and tls endpoints")
        with self.lock:
            if name in self.endpoints:
                return 400, invalid(f"a tunnel with the name '{name}' already exists")
            listener = socket.create_server(("127.0.0.1", 0))
            tls = self.tls if proto == "https" else None
            endpoint = Endpoint(name, proto, str(addr), proxy_proto, listener, raw_upstream, tls)
            self.endpoints[name] = endpoint
        threading.Thread(target=accept_loop, args=(endpoint,), daemon=True).start()
        log(
            "info",
            "started tunnel",
            obj="tunnels",
            name=name,
            addr=str(addr),
            url=endpoint.public_url,
        )
        record_state(f"endpoint name={name} url={endpoint.public_url} upstream={addr}")
        return 201, endpoint.as_endpoint() if v3 else endpoint.as_tunnel()

    def delete(self, name: str) -> bool:
        with self.lock:
            endpoint = self.endpoints.pop(name, None)
        if endpoint is None:
            return False
        endpoint.listener.close()
        log("info", "stopped tunnel", obj="tunnels", name=name)
        return True


def invalid(err: str) -> dict[str, Any]:
    return {
        "error_code": 102,
        "status_code": 400,
        "msg": "invalid tunnel configuration",
        "details": {"err": err},
    }


def failed_to_start(err: str, name: str) -> dict[str, Any]:
    code = re.search(r"ERR_NGROK_\d+", err)
    record_state(f"refused name={name} err={code.group(0) if code else '-'}")
    log(
        "warn",
        "failed to start tunnel",
        pg="/api/endpoints",
        id=secrets.token_hex(8),
        name=name,
        err=err,
    )
    return {
        "error_code": 103,
        "status_code": 502,
        "msg": "failed to start tunnel",
        "details": {"err": err},
    }


def make_handler(agent: Agent) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the agent logs its own way

        def reply(self, status: int, body: dict[str, Any] | None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def route(self) -> tuple[str, str | None]:
            path = urlsplit(self.path).path.rstrip("/")
            for collection in ("/api/endpoints", "/api/tunnels"):
                if path == collection:
                    return collection, None
                if path.startswith(collection + "/"):
                    return collection, path[len(collection) + 1 :]
            return path, None

        def do_GET(self) -> None:
            collection, name = self.route()
            if collection == "/api":
                self.reply(200, {"uri": "/api/"})
                return
            if collection not in ("/api/endpoints", "/api/tunnels"):
                self.reply(404, not_found(self.path))
                return
            v3 = collection == "/api/endpoints"
            with agent.lock:
                items = list(agent.endpoints.values())
            if name is None:
                key = "endpoints" if v3 else "tunnels"
                listed = [e.as_endpoint() if v3 else e.as_tunnel() for e in items]
                self.reply(200, {key: listed, "uri": collection})
                return
            for e in items:
                if e.name == name:
                    self.reply(200, e.as_endpoint() if v3 else e.as_tunnel())
                    return
            self.reply(404, not_found(name))

        def do_POST(self) -> None:
            collection, name = self.route()
            if collection not in ("/api/endpoints", "/api/tunnels") or name is not None:
                self.reply(404, not_found(self.path))
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self.reply(400, invalid("request body is not JSON"))
                return
            status, reply = agent.create(body, v3=collection == "/api/endpoints")
            self.reply(status, reply)

        def do_DELETE(self) -> None:
            collection, name = self.route()
            if collection in ("/api/endpoints", "/api/tunnels") and name and agent.delete(name):
                self.reply(204, None)
            else:
                self.reply(404, not_found(str(name)))

    return Handler


def not_found(what: str) -> dict[str, Any]:
    return {
        "error_code": 100,
        "status_code": 404,
        "msg": "Tunnel not found",
        "details": {"err": f"tunnel '{what}' not found"},
    }


def serve_silently(listener: socket.socket) -> None:
    """Accept API connections and never answer, like an agent that has hung."""
    held: list[socket.socket] = []
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)


def session_failure(agent: Agent) -> str | None:
    if agent.fail == "no_authtoken" or agent.authtoken is None:
        return MSG_4018
    if agent.fail == "bad_authtoken":
        return MSG_105.format(token=agent.authtoken)
    if agent.fail == "agent_already_running":
        return MSG_108
    return None


def start(args: list[str]) -> int:
    options: dict[str, str] = {}
    flags = {"--config", "--authtoken", "--region", "--log", "--log-format", "--log-level"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags and i + 1 < len(args):
            options[arg] = args[i + 1]
            i += 2
        elif arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            options[key] = value
            i += 1
        else:
            i += 1  # --none, endpoint names: accepted and ignored
    config_path = options.get("--config") or default_config_path()
    authtoken = (
        options.get("--authtoken")
        or read_config_value(config_path, "authtoken")
        or os.environ.get("NGROK_AUTHTOKEN")
        or None
    )
    fail = os.environ.get("STANDIN_NGROK_FAIL") or None
    if fail is not None and fail not in FAILURES:
        print(f"ERROR:  unknown STANDIN_NGROK_FAIL {fail!r}; one of {FAILURES}", file=sys.stderr)
        return 2
    agent = Agent(fail, authtoken)

    pid = os.getpid()
    pidfile = os.environ.get("STANDIN_NGROK_PIDFILE")
    if pidfile:
        with open(pidfile, "w", encoding="utf-8") as f:
            f.write(f"{pid}\n")
    record_state(f"started pid={pid} fail={fail or '-'}")

    stop = threading.Event()
    reason = ["lifetime"]

    def on_signal(signum: int, frame: object) -> None:
        reason[0] = signal.Signals(signum).name.lower()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if fail != "silent":
        if "--config" not in options:
            log("info", "no configuration paths supplied")
        log("info", "open config file", path=config_path, err="nil")
        web_addr = read_config_value(config_path, "web_addr") or "127.0.0.1:0"
        host, _, port = web_addr.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1"):
            host = "127.0.0.1"  # the stand-in never listens beyond this machine
        if fail == "silent_api":
            listener = socket.create_server((host, int(port or 0)))
            threading.Thread(target=serve_silently, args=(listener,), daemon=True).start()
            bound = listener.getsockname()
        else:
            server = http.server.ThreadingHTTPServer((host, int(port or 0)), make_handler(agent))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            bound = server.server_address
        log(
            "info",
            "starting web service",
            obj="web",
            addr=f"{bound[0]}:{bound[1]}",
            allow_hosts="[]",
        )
        time.sleep(SESSION_LATENCY)
        failure = session_failure(agent)
        if failure is not None:
            log("eror", "failed to reconnect session", obj="tunnels.session", err=failure)
            log("eror", "session closing", obj="tunnels.session", err=failure)
            log("eror", "terminating with error", obj="app", err=failure)
            log("crit", "command failed", err=failure)
            record_state(f"exited pid={pid} reason=session_failed")
            return 1
        log("info", "client session established", obj="tunnels.session")
        log("info", "tunnel session started", obj="tunnels.session")

    die_after = os.environ.get("STANDIN_NGROK_DIE_AFTER")
    lifetime = float(os.environ.get("STANDIN_NGROK_LIFETIME") or DEFAULT_LIFETIME)
    now = time.monotonic()
    deadline = now + lifetime
    death = now + float(die_after) if die_after else None
    parent = os.getppid()
    while not stop.wait(PARENT_CHECK_INTERVAL):
        now = time.monotonic()
        if death is not None and now >= death:
            record_state(f"exited pid={pid} reason=died")
            os._exit(1)  # a crash: no goodbye, no cleanup
        if now >= deadline or os.getppid() != parent:
            reason[0] = "lifetime" if now >= deadline else "orphaned"
            break
    log("info", "received stop request", obj="app", stopReq="{err:<nil> restart:false}")
    record_state(f"exited pid={pid} reason={reason[0]}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("help", "--help", "-h"):
        print("NAME:\n  ngrok - stand-in ngrok agent for tests\n")
        return 0
    command, rest = argv[0], argv[1:]
    config = None
    if "--config" in rest:
        index = rest.index("--config")
        config = rest[index + 1] if index + 1 < len(rest) else None
    if command in ("--version", "-v", "version"):
        print(f"ngrok version {VERSION}")
        return 0
    if command == "start":
        return start(rest)
    if command == "update":
        print("No update available, this is the latest version.")
        return 0
    if command == "config" and rest[:1] == ["add-authtoken"] and len(rest) >= 2:
        path = config or default_config_path()
        save_authtoken(path, rest[1])
        print(f"Authtoken saved to configuration file: {path}")
        return 0
    if command == "config" and rest[:1] == ["check"]:
        print(f"Valid configuration file at {config or default_config_path()}")
        return 0
    print(
        f"ERROR:  unknown command {command!r} (the stand-in speaks what pyngrok uses)",
        file=sys.stderr,
    )
    return 1


def run() -> None:
    """The executable's entry point: exit at once, whatever daemon threads are still about."""
    try:
        code = main(sys.argv[1:])
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # listeners and pipes are daemon threads: they must not hold the exit up


if __name__ == "__main__":
    run()
