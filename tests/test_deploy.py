"""Deployment: docker-compose.yml and deploy/Dockerfile, checked without a Docker engine.

The real Compose binary normalises the compose file (`config`), hadolint lints the Dockerfile,
and the last test runs the compose model as local processes: each service's command and
environment as Compose resolved them, with only ports, paths inside the image and the ngrok
agent (the stand-in) substituted, then `docker compose down`'s order: the tunnel's pre_stop
hook, SIGTERM to the tunnel, SIGTERM to the server.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

import ngrok_standin
from chatpeer import Peer
from multichat.hosting import control
from multichat.hosting.tunnel import CLOSE_DEADLINE
from multichat.protocol.events import ConnectionClosed, Event, Hello, Shutdown, Welcome
from multichat.server.limits import SHUTDOWN_GRACE_SECONDS

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent

TOKEN = "2qDeployTestAuthtoken_7hNc4VbXq2LmR9sWd"  # must reach the tunnel and nothing else
PASSWORD = "tavo-mire-kuna"
SHUTDOWN_REASON = "the host stopped the room"  # what the tunnel's pre_stop hook tells members
STEP_LIMIT = 20  # seconds for any one step of the process test; each takes one or two


def tool(name: str) -> str:
    """A command-line tool from this venv (the test extras install them)."""
    path = shutil.which(name, path=str(VENV_BIN))
    if path is None:
        pytest.fail(f"{name} is not in {VENV_BIN}: run `pip install -e '.[test]'`")
    return path


def clean_environ() -> dict[str, str]:
    """This process's environment without anything that would change what is being tested."""
    prefixes = ("MULTICHAT_", "NGROK_", "PYNGROK_", "STANDIN_NGROK_", "COMPOSE_", "DOCKER_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def seconds(duration: str) -> float:
    """A Compose duration ("15s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def option(argv: list[str], flag: str) -> str:
    """The value after `flag` in `argv`."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with the value after `flag` replaced."""
    option(argv, flag)
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


# --------------------------------------------------------------------------- the Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, grouped by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def image_config() -> dict[str, Any]:
    """What the final stage gives a container: user, env, entrypoint, healthcheck."""
    final = dockerfile_stages()[-1]
    config: dict[str, Any] = {"env": {}}
    for ins in final:
        if ins.keyword == "ENV":
            config["env"].update(dict(pair.split("=", 1) for pair in shlex.split(ins.args)))
        elif ins.keyword == "USER":
            config["user"] = ins.args
        elif ins.keyword == "ENTRYPOINT":
            config["entrypoint"] = json.loads(ins.args)
        elif ins.keyword == "HEALTHCHECK":
            flags, _, cmd = ins.args.partition("CMD ")
            config["healthcheck"] = json.loads(cmd)
            config["healthcheck_flags"] = dict(
                flag.removeprefix("--").split("=", 1) for flag in flags.split()
            )
    return config


def test_dockerfile_is_a_small_non_root_image_with_signals_and_a_health_check() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    for stage in stages:
        base = stage[0].args.split()[0]
        assert base == "python:3.11-slim", f"slim Python base pinned by tag, not {base}"
    image = image_config()
    uid, _, gid = image["user"].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "a numeric non-root user"
    assert image["entrypoint"] == ["multichat"], "exec form, so SIGTERM reaches multichat"
    assert image["healthcheck"][:2] == ["multichat", "status"]
    assert seconds(image["healthcheck_flags"]["timeout"]) > control.ANSWER_SECONDS
    assert image["env"]["PATH"].startswith("/opt/venv/bin:"), "the app runs from its venv"
    final = "\n".join(f"{i.keyword} {i.args}" for i in stages[-1])
    assert "pip install" not in final and "install_ngrok" not in final


def test_the_ngrok_agent_is_installed_at_build_time_through_pyngrok() -> None:
    build = "\n".join(i.args for stage in dockerfile_stages()[:-1] for i in stage)
    agent = image_config()["env"]["PYNGROK_NGROK_PATH"]
    assert f"installer.install_ngrok('{agent}')" in build
    assert f"--from=build {Path(agent).parent} " in DOCKERFILE.read_text(encoding="utf-8")


def test_hadolint_passes_with_no_rule_switched_off_without_a_reason(tmp_path: Path) -> None:
    # An empty config: no user or repository config can switch a rule off behind our back.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n", encoding="utf-8")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(config), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[number - 1].strip() if number else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"line {number + 1}: say why the rule is off, on the line above"
            )
    assert not (ROOT / ".hadolint.yaml").exists() and not (ROOT / ".hadolint.yml").exists()


def test_build_context_holds_only_what_the_image_copies() -> None:
    # The context is the repository root: .env, secrets/ and .venv must stay out of it.
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "exclude everything, then admit what the build needs"
    admitted = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source
        for ins in dockerfile_stages()[0]
        if ins.keyword == "COPY"
        for source in ins.args.split()[:-1]
    }
    assert admitted == copied


# --------------------------------------------------------------------------- the compose model


@dataclass(frozen=True)
class Deployment:
    model: dict[str, Any]
    secret: Path

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.model["services"][name])


def compose(env_file: Path, secret: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real Compose binary on our compose file; `config` needs no Docker engine."""
    env = clean_environ()
    env["MULTICHAT_PASSWORD_FILE"] = str(secret)
    env["DOCKER_CONFIG"] = str(env_file.parent / "docker-config")  # no user config, no context
    project = ["--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    return subprocess.run(
        [tool("docker-compose"), *project, "--env-file", str(env_file), *args],
        cwd=env_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of .env.example with an authtoken filled in, and a room password file."""
    directory = tmp_path_factory.mktemp("compose")
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    env_file = directory / ".env"
    env_file.write_text(
        re.sub(r"(?m)^NGROK_AUTHTOKEN=.*$", f"NGROK_AUTHTOKEN={TOKEN}", example), encoding="utf-8"
    )
    secret = directory / "room_password.txt"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    return env_file, secret


@pytest.fixture(scope="module")
def deployment(compose_files: tuple[Path, Path]) -> Deployment:
    result = compose(*compose_files, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return Deployment(json.loads(result.stdout), compose_files[1])


def test_compose_config_is_valid(compose_files: tuple[Path, Path]) -> None:
    result = compose(*compose_files, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_two_services_from_one_image(deployment: Deployment) -> None:
    assert set(deployment.model["services"]) == {"server", "tunnel"}
    server, tunnel = deployment.service("server"), deployment.service("tunnel")
    for service in (server, tunnel):
        assert service["build"] == {"context": str(ROOT), "dockerfile": "deploy/Dockerfile"}
        assert service["image"] == server["image"]
        assert service.get("entrypoint") is None, "the image's ENTRYPOINT: multichat"
        assert service["init"] is True
        assert service["restart"] not in ("", "no")
        grace = seconds(service["stop_grace_period"])
        assert grace > SHUTDOWN_GRACE_SECONDS and grace > CLOSE_DEADLINE
    assert server["command"][0] == "serve" and tunnel["command"][0] == "tunnel"


def test_server_publishes_the_room_and_reads_the_password_from_a_secret(
    deployment: Deployment,
) -> None:
    server = deployment.service("server")
    command = server["command"]
    (port,) = server["ports"]  # the room's port only: the PROXY listener is never published
    assert (port["target"], port["published"]) == (int(option(command, "--port")), "5002")
    (secret,) = server["secrets"]
    assert option(command, "--password-file") == secret["target"]
    assert deployment.model["secrets"][secret["source"]]["file"] == str(deployment.secret)
    assert option(command, "--room") == "multichat"
    # The password is a secret, never an environment variable; the backplane, unset, is empty.
    assert server["environment"] == {"MULTICHAT_BACKPLANE": ""}


def test_server_health_check_is_multichat_status(deployment: Deployment) -> None:
    check = deployment.service("server")["healthcheck"]
    assert check["test"] == ["CMD", *image_config()["healthcheck"]]
    assert seconds(check["timeout"]) > control.ANSWER_SECONDS
    assert seconds(check["start_interval"]) <= 2, "the tunnel should not wait long to start"


def test_tunnel_starts_on_a_healthy_server_in_its_namespace(deployment: Deployment) -> None:
    server, tunnel = deployment.service("server"), deployment.service("tunnel")
    assert tunnel["depends_on"]["server"]["condition"] == "service_healthy"
    assert tunnel["network_mode"] == "service:server"
    assert "ports" not in tunnel
    command = tunnel["command"]
    proxy_port = option(server["command"], "--proxy-port")
    assert option(command, "--target") == f"127.0.0.1:{proxy_port}", "the loopback listener"
    assert option(command, "--proxy-protocol") == "2"  # the TCP endpoint's; HTTPS sends XFF
    assert "--no-tcp" not in command, "an account with a card on file gets a TCP address too"
    assert option(command, "--ngrok-path") == image_config()["env"]["PYNGROK_NGROK_PATH"]
    assert option(command, "--ngrok-config").startswith("/opt/ngrok/"), "baked into the image"
    assert tunnel["healthcheck"] == {"disable": True}


def test_only_the_tunnel_sees_the_authtoken(deployment: Deployment) -> None:
    tunnel = deployment.service("tunnel")
    assert tunnel["environment"] == {"NGROK_AUTHTOKEN": TOKEN}
    for name, service in deployment.model["services"].items():
        if name != "tunnel":
            assert TOKEN not in json.dumps(service), f"{name} can see the authtoken"


def test_both_services_share_the_state_directory_the_tunnel_read_only(
    deployment: Deployment,
) -> None:
    state_dir = image_config()["env"]["MULTICHAT_STATE_DIR"]
    mounts = {
        name: [m for m in deployment.service(name)["volumes"] if m["target"] == state_dir]
        for name in ("server", "tunnel")
    }
    assert mounts["server"][0]["source"] == mounts["tunnel"][0]["source"]
    assert not mounts["server"][0].get("read_only")
    assert mounts["tunnel"][0]["read_only"] is True
    volume = deployment.model["volumes"][mounts["server"][0]["source"]]
    uid, _, gid = image_config()["user"].partition(":")
    assert volume["driver_opts"]["type"] == "tmpfs", "the control token never touches disk"
    assert f"uid={uid},gid={gid}," in volume["driver_opts"]["o"], "writable by the app user"


# The backplane's address inside the compose project (the `redis` service's default port).
SCALE_BACKPLANE = "redis://redis:6379/0"


@pytest.fixture(scope="module")
def scaled(compose_files: tuple[Path, Path]) -> Deployment:
    """The model with the `scale` profile, as .env.example says to turn it on."""
    env_file, secret = compose_files
    scaled_env = env_file.with_name("scale.env")
    scaled_env.write_text(
        env_file.read_text(encoding="utf-8").replace(
            "MULTICHAT_BACKPLANE=\n", f"MULTICHAT_BACKPLANE={SCALE_BACKPLANE}\n"
        ),
        encoding="utf-8",
    )
    result = compose(scaled_env, secret, "--profile", "scale", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return Deployment(json.loads(result.stdout), secret)


def test_the_scale_profile_adds_redis_and_a_second_server_for_the_same_rooms(
    scaled: Deployment,
) -> None:
    model = scaled
    assert set(model.model["services"]) == {"server", "tunnel", "redis", "server-b"}
    redis, server, second = (model.service(n) for n in ("redis", "server", "server-b"))
    # Acknowledged messages survive a Redis restart only with its append-only file.
    assert redis["image"].startswith("redis:") and "ports" not in redis
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert [m["target"] for m in redis["volumes"]] == ["/data"]
    url = SCALE_BACKPLANE
    assert server["environment"] == {"MULTICHAT_BACKPLANE": url}
    assert option(second["command"], "--backplane") == url
    for service in (server, second):
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    # Same image, room and password; its own port, state and data.
    assert second["image"] == server["image"] and second["command"][0] == "serve"
    assert option(second["command"], "--room") == option(server["command"], "--room")
    assert second["secrets"] == server["secrets"]
    (port,) = second["ports"]
    assert port["published"] == "5012" and port["target"] == int(
        option(second["command"], "--port")
    )
    sources = {
        name: {m["source"] for m in model.service(name)["volumes"]}
        for name in ("server", "server-b")
    }
    assert not sources["server"] & sources["server-b"], "each server its own state and data"
    assert "--proxy-port" not in second["command"], "no tunnel: the public link is server's"


def test_env_example_documents_every_variable_with_compose_defaults() -> None:
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = dict(re.findall(r"\$\{(\w+)(?::-([^}]*))?\}", compose_text))
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    documented = {}
    for number, line in enumerate(lines):
        if re.match(r"\w+=", line):
            name, _, value = line.partition("=")
            assert lines[number - 1].startswith("#"), f"{name} has no comment"
            documented[name] = value
    assert set(documented) == set(used)
    for name, default in used.items():
        assert documented[name] == default, f"{name}: .env.example and compose disagree"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and "secrets/" in ignored


# --------------------------------------------------------------------------- compose as processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Local:
    """How this machine stands in for a container: paths and ports substituted."""

    tmp: Path
    server_port: int
    proxy_port: int
    state_dir: Path
    ngrok_config: Path
    agent_state: Path
    tls: ngrok_standin.StandinTLS
    processes: list[trio.Process] = field(default_factory=list)

    def environ(self, service: dict[str, Any], state_dir: Path | None = None) -> dict[str, str]:
        """The image's environment, then the service's, as a container would get them (each
        service its own state volume: `state_dir`, else the server's)."""
        env = clean_environ()
        image_env = dict(image_config()["env"])
        image_env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        image_env["MULTICHAT_STATE_DIR"] = str(state_dir or self.state_dir)
        image_env["PYNGROK_NGROK_PATH"] = ngrok_standin.ngrok_path()
        env.update(image_env)
        env.update(service.get("environment") or {})
        # Only for the stand-in agent: where it records itself, a cap on its life, and the
        # certificate its HTTPS endpoints serve (ngrok's cloud has its own).
        env[ngrok_standin.STATE_ENV] = str(self.agent_state)
        env[ngrok_standin.LIFETIME_ENV] = "60"
        env.update(self.tls.env())
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def argv(self, command: list[str]) -> list[str]:
        """A command from the image or the model, its program found where the image has it."""
        # The image's venv first (its PATH), then the base image's own tools (`sh`).
        program = shutil.which(command[0], path=str(VENV_BIN)) or shutil.which(command[0])
        assert program is not None, command[0]
        return [program, *command[1:]]

    async def start(
        self, name: str, command: list[str], env: dict[str, str], *, pipe: bool = False
    ) -> trio.Process:
        """A service's container: the image's ENTRYPOINT plus the command, logged to a file."""
        log = (self.tmp / f"{name}.log").open("wb")
        try:
            process = await trio.lowlevel.open_process(
                self.argv(image_config()["entrypoint"] + command),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
            )
        finally:
            log.close()  # the child has its own copy
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(encoding="utf-8", errors="replace")


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    here = Local(
        tmp=tmp_path,
        server_port=free_port(),
        proxy_port=free_port(),
        state_dir=tmp_path / "state",
        ngrok_config=ngrok_standin.write_config(tmp_path),
        agent_state=tmp_path / "agent.state",
        tls=ngrok_standin.make_tls(tmp_path),
    )
    try:
        yield here
    finally:
        for process in here.processes:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        ngrok_standin.kill_agents(here.agent_state)


async def start_healthy_server(deployment: Deployment, local: Local) -> trio.Process:
    """The server's command from the model, on loopback ports, once its health check passes."""
    return await start_healthy(deployment, local, "server", local.server_port, local.state_dir)


async def start_healthy(
    deployment: Deployment,
    local: Local,
    name: str,
    port: int,
    state_dir: Path,
    backplane: str | None = None,
) -> trio.Process:
    """A multichat service's command from the model, on loopback `port` (and the proxy port),
    its backplane (if any) at `backplane`, once its health check passes."""
    service = deployment.service(name)
    command = with_option(service["command"], "--port", str(port))
    if "--proxy-port" in command:
        command = with_option(command, "--proxy-port", str(local.proxy_port))
    (secret,) = service["secrets"]
    assert option(command, "--password-file") == secret["target"]
    command = with_option(command, "--password-file", str(deployment.secret))
    data = next(v for v in service["volumes"] if v["target"] == option(command, "--data-dir"))
    assert data["type"] == "volume" and data["source"] in deployment.model["volumes"], (
        "the data directory is a named volume"
    )
    command = with_option(command, "--data-dir", str(local.tmp / f"data-{name}"))
    env = local.environ(service, state_dir)
    if backplane is not None:
        if "--backplane" in command:
            assert option(command, "--backplane") == SCALE_BACKPLANE
            command = with_option(command, "--backplane", backplane)
        else:
            assert env["MULTICHAT_BACKPLANE"] == SCALE_BACKPLANE
            env["MULTICHAT_BACKPLANE"] = backplane
    assert "NGROK_AUTHTOKEN" not in env
    process = await local.start(name, [*command, "--host", "127.0.0.1"], env)

    # depends_on: service_healthy. Compose polls the health check; so do we.
    check = service["healthcheck"]
    assert check["test"][0] == "CMD"
    with trio.fail_after(seconds(check["start_period"])):
        while True:
            probe = await trio.run_process(
                local.argv(check["test"][1:]), env=env, capture_stdout=True, check=False
            )
            if probe.returncode == 0:
                break
            assert process.returncode is None, local.log(name)
            await trio.sleep(seconds(check["start_interval"]))
    assert b"Room 'multichat' is up" in probe.stdout
    return process


@dataclass(frozen=True)
class Addresses:
    """What `docker compose logs tunnel` shows: the link, its join command, the TCP address."""

    link: str
    join: str
    tcp: str


async def read_addresses(stdout: trio.abc.ReceiveStream) -> Addresses:
    buffer = b""
    while True:
        text = buffer.decode("utf-8", "replace")
        link = re.search(r"^Open in a browser: (https://\S+)$", text, re.MULTILINE)
        join = re.search(r"^Friends join with: (multichat connect \S+)$", text, re.MULTILINE)
        tcp = re.search(r"^TCP address: (tcp://\S+)$", text, re.MULTILINE)
        if link and join and tcp:
            return Addresses(link.group(1), join.group(1), tcp.group(1))
        data = await stdout.receive_some()
        assert data, f"the tunnel stopped before printing its addresses: {text!r}"
        buffer += data


async def fetch_page(link: str, local: Local) -> tuple[int, str | None, bytes]:
    """GET the link as a program does (ngrok's header skips its browser warning)."""

    def get() -> tuple[int, str | None, bytes]:
        parts = urlsplit(link)
        assert parts.hostname is not None
        context = local.tls.client_context()
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context, timeout=STEP_LIMIT
        )
        try:
            conn.request("GET", "/", headers={ngrok_standin.SKIP_WARNING_HEADER: "1"})
            response = conn.getresponse()
            return response.status, response.headers["Ngrok-Error-Code"], response.read()
        finally:
            conn.close()

    return await trio.to_thread.run_sync(get)


async def collect(peer: Peer, events: list[Event]) -> None:
    while not isinstance(event := await peer.next_event(), ConnectionClosed):
        events.append(event)


async def stop(process: trio.Process, grace: float) -> int:
    """What `docker stop` does: SIGTERM if it still runs, then wait out the grace period."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with trio.fail_after(grace):
        return await process.wait()


async def test_compose_up_and_down_as_local_processes(deployment: Deployment, local: Local) -> None:
    server, tunnel = deployment.service("server"), deployment.service("tunnel")
    server_proc = await start_healthy_server(deployment, local)

    # The tunnel: the model's command, aimed at our PROXY port, with the stand-in agent.
    target_host, _, target_port = option(tunnel["command"], "--target").rpartition(":")
    assert (target_host, target_port) == ("127.0.0.1", option(server["command"], "--proxy-port"))
    command = with_option(tunnel["command"], "--target", f"127.0.0.1:{local.proxy_port}")
    command = with_option(command, "--ngrok-path", ngrok_standin.ngrok_path())
    command = with_option(command, "--ngrok-config", str(local.ngrok_config))
    tunnel_env = local.environ(tunnel)
    assert tunnel_env["NGROK_AUTHTOKEN"] == TOKEN
    tunnel_proc = await local.start("tunnel", command, tunnel_env, pipe=True)
    assert tunnel_proc.stdout is not None
    with trio.fail_after(STEP_LIMIT):
        public = await read_addresses(tunnel_proc.stdout)
    assert public.join == f"multichat connect {public.link}"

    # The link reaches the room's own page through the server's loopback tunnel listener.
    with trio.fail_after(STEP_LIMIT):
        status, ngrok_error, page = await fetch_page(public.link, local)
    assert (status, ngrok_error) == (200, None), page
    assert b"<html" in page.lower()

    # A friend through the TCP address, and one on the LAN.
    host, _, port = public.tcp.removeprefix("tcp://").rpartition(":")
    assert host == "127.0.0.1", "the stand-in's public address is on loopback"
    with trio.fail_after(STEP_LIMIT):
        friend = Peer(await trio.open_tcp_stream(host, int(port)))
        await friend.send(Hello("remote", PASSWORD))
        assert isinstance(await friend.next_event(), Welcome)
        neighbour = await Peer.join(local.server_port, "neighbour", PASSWORD)

    # `docker compose down`: the tunnel first (its pre_stop hook, then SIGTERM), then the
    # server. Both friends must be told, the remote one through the tunnel.
    seen: dict[str, list[Event]] = {"remote": [], "neighbour": []}
    with trio.fail_after(STEP_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, friend, seen["remote"])
            nursery.start_soon(collect, neighbour, seen["neighbour"])
            for hook in tunnel["pre_stop"]:
                result = await trio.run_process(
                    local.argv(hook["command"]), env=tunnel_env, capture_stdout=True
                )
                assert b"is closed" in result.stdout, result.stdout
    for name, events in seen.items():
        assert Shutdown(SHUTDOWN_REASON) in events, f"{name} was not told: {events}"
    assert await stop(tunnel_proc, seconds(tunnel["stop_grace_period"])) == 0, local.log("tunnel")
    assert await stop(server_proc, seconds(server["stop_grace_period"])) == 0, local.log("server")

    agents = ngrok_standin.started_pids(local.agent_state)
    assert agents, "the tunnel never started the stand-in agent"
    assert not any(ngrok_standin.pid_alive(pid) for pid in agents), "the agent outlived the tunnel"
    assert list(local.state_dir.glob("room-*.json")) == [], "the state file is left behind"


async def test_lan_only_down_is_sigterm_to_the_server(deployment: Deployment, local: Local) -> None:
    # `docker compose up server` (no tunnel, no hook): down is SIGTERM through tini.
    server = deployment.service("server")
    server_proc = await start_healthy_server(deployment, local)
    with trio.fail_after(STEP_LIMIT):
        neighbour = await Peer.join(local.server_port, "neighbour", PASSWORD)
    events: list[Event] = []
    with trio.fail_after(STEP_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, neighbour, events)
            assert await stop(server_proc, seconds(server["stop_grace_period"])) == 0
    assert Shutdown(SHUTDOWN_REASON) in events, events
    assert list(local.state_dir.glob("room-*.json")) == []


async def test_the_scale_profile_as_local_processes(scaled: Deployment, local: Local) -> None:
    """`docker compose --profile scale up`, each service's command a local process: Redis as
    its command says (on a loopback port), then both servers once it is healthy, each once
    its own health check passes; a member of each is in one room. Then `down`."""
    redis = scaled.service("redis")
    redis_port = free_port()
    (local.tmp / "redis").mkdir()
    redis_command = [*redis["command"], "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_command += ["--dir", str(local.tmp / "redis")]
    redis_proc = await trio.lowlevel.open_process(
        local.argv(redis_command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    local.processes.append(redis_proc)
    check = redis["healthcheck"]
    assert check["test"][:1] == ["CMD"]
    with trio.fail_after(seconds(check["start_period"])):
        while True:
            probe = await trio.run_process(
                local.argv([check["test"][1], "-p", str(redis_port), *check["test"][2:]]),
                capture_stdout=True,
                check=False,
            )
            if probe.stdout.strip() == b"PONG":
                break
            assert redis_proc.returncode is None, "redis-server stopped at start"
            await trio.sleep(seconds(check["start_interval"]))

    backplane = f"redis://127.0.0.1:{redis_port}/0"
    b_port = free_port()
    server = await start_healthy(
        scaled, local, "server", local.server_port, local.state_dir, backplane
    )
    second = await start_healthy(
        scaled, local, "server-b", b_port, local.tmp / "state-b", backplane
    )
    with trio.fail_after(STEP_LIMIT):
        ann = await Peer.join(local.server_port, "ann", PASSWORD)
        bob = await Peer.join(b_port, "bob", PASSWORD)
        await ann.say("one room, two servers", "a1")
        echo = await ann.heard("one room, two servers")
        heard = await bob.heard("one room, two servers")
    assert echo.id == "a1" and heard.seq == echo.seq

    for name, process in (("server-b", second), ("server", server)):
        grace = seconds(scaled.service(name)["stop_grace_period"])
        assert await stop(process, grace) == 0, local.log(name)
    assert await stop(redis_proc, STEP_LIMIT) == 0
