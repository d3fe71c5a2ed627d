"""A stand-in for the ngrok v3 agent that pyngrok drives exactly as it drives the real one.

Test code, pure stdlib, loopback only. It speaks what pyngrok 9 uses of the agent:

- `start --none --log stdout [--config PATH] [--authtoken TOKEN] [--region R]`: logfmt lines
  on stdout (`starting web service ... addr=127.0.0.1:PORT`, `client session established`,
  `tunnel session started`), then the local API until SIGTERM/SIGINT;
- `--version` / `version`, `config add-authtoken TOKEN`, `config check`, `update`;
- the local API: `GET /api/`, `GET|POST /api/endpoints` (v3), `GET|POST /api/tunnels` (v2),
  `GET|DELETE /api/endpoints/NAME` and `/api/tunnels/NAME`.

A TCP endpoint really forwards: it listens on an ephemeral 127.0.0.1 "public" port, its public
URL is `tcp://127.0.0.1:PORT`, and each connection is piped both ways to the upstream address,
after a PROXY protocol v1 or v2 header carrying the real client's address when asked for
(`upstream.proxy_protocol` in v3, `proxy_proto` in v2; "1", "2", 1 or 2), as ngrok does.

Switches, read from the environment:

- `STANDIN_NGROK_FAIL`: one of `FAILURES`, each reported with the real agent's error code and
  words (`no_authtoken` also happens by itself when no authtoken is configured at all);
- `STANDIN_NGROK_DIE_AFTER`: seconds after startup at which the agent dies without a word;
- `STANDIN_NGROK_PIDFILE`: our pid is written here at start;
- `STANDIN_NGROK_STATE`: one line appended per lifecycle event (`started pid=N`, `endpoint ...`,
  `exited pid=N reason=...`), so a test can find every agent it caused to start;
- `STANDIN_NGROK_LIFETIME`: hard cap on our life in seconds (default 120), so that a leaked
  stand-in cannot outlive a test run; we also exit when our parent goes away.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
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
    "card_required",  # ERR_NGROK_8013 when a TCP endpoint is requested
    "endpoint_in_use",  # ERR_NGROK_334 when an endpoint is requested
    "silent",  # starts, then never prints a line and never serves the API
    "silent_api",  # prints the startup lines, but the API accepts and never answers
)

DEFAULT_LIFETIME = 120.0  # longer than any test; a leak dies on its own
PARENT_CHECK_INTERVAL = 0.2  # how quickly we notice our parent (the test run) is gone
PIPE_CHUNK = 64 * 1024
# The real agent's round trip to ngrok's cloud before it knows how the session went. pyngrok
# stops reading at the first line after which the agent has exited, so an agent that printed
# its failure and exited within microseconds of "starting web service" would hide the failure.
SESSION_LATENCY = 0.1
UPSTREAM_CONNECT_TIMEOUT = 5.0  # the upstream is on this machine: it answers at once or never

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
    upstream: str  # host:port
    proxy_proto: int | None
    listener: socket.socket
    raw_upstream: dict[str, Any]
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    conns: int = 0

    @property
    def public_url(self) -> str:
        host, port = self.listener.getsockname()[:2]
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
        config: dict[str, Any] = {"addr": self.upstream, "inspect": False}
        if self.proxy_proto:
            config["proxy_proto"] = str(self.proxy_proto)
        return {
            "ID": self.id,
            "name": self.name,
            "uri": f"/api/tunnels/{self.name}",
            "public_url": self.public_url,
            "proto": "tcp",
            "config": config,
            "metrics": {"conns": {"count": self.conns, "gauge": 0}},
        }


def upstream_address(url: str) -> tuple[str, int]:
    """ngrok's upstream forms: `8080`, `host:8080`, `tcp://host:8080`."""
    text = str(url).strip()
    if text.isdigit():
        return "localhost", int(text)
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"invalid upstream address {url!r}")
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
    while True:
        try:
            client, _ = endpoint.listener.accept()
        except OSError:
            return  # closed by DELETE or shutdown
        endpoint.conns += 1
        threading.Thread(target=serve_connection, args=(endpoint, client), daemon=True).start()


# --------------------------------------------------------------------------- the agent


class Agent:
    def __init__(self, fail: str | None, authtoken: str | None) -> None:
        self.fail = fail
        self.authtoken = authtoken
        self.endpoints: dict[str, Endpoint] = {}
        self.lock = threading.Lock()

    def create(self, body: dict[str, Any], *, v3: bool) -> tuple[int, dict[str, Any]]:
        name = str(body.get("name") or f"tcp-{secrets.token_hex(4)}")
        if v3:
            raw_upstream = body.get("upstream") or {}
            if not isinstance(raw_upstream, dict):
                raw_upstream = {"url": raw_upstream}
            addr = raw_upstream.get("url")
            url = str(body.get("url") or "")
            proto = url.split("://", 1)[0] if "://" in url else ("tcp" if url else "https")
            proxy = raw_upstream.get("proxy_protocol", body.get("proxy_proto"))
        else:
            addr = body.get("addr")
            proto = str(body.get("proto") or "http")
            proxy = body.get("proxy_proto")
            raw_upstream = {"url": addr}
        if proto != "tcp":
            return 400, invalid(f"the stand-in serves tcp endpoints only, not {proto!r}")
        if self.fail == "card_required":
            return 502, failed_to_start(MSG_8013, name)
        if self.fail == "endpoint_in_use":
            return 502, failed_to_start(MSG_334.format(url=body.get("url") or "tcp://"), name)
        try:
            proxy_proto = parse_proxy_version(proxy)
            upstream_address(str(addr))
        except ValueError as exc:
            return 400, invalid(str(exc))
        with self.lock:
            if name in self.endpoints:
                return 400, invalid(f"a tunnel with the name '{name}' already exists")
            listener = socket.create_server(("127.0.0.1", 0))
            endpoint = Endpoint(name, str(addr), proxy_proto, listener, raw_upstream)
            self.endpoints[name] = endpoint
        threading.Thread(target=accept_loop, args=(endpoint,), daemon=True).start()
        log(
            "info",
            "started tunnel",
            obj="tunnels",
            name=name,
            addr=f"tcp://{addr}",
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
