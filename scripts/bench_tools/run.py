"""One benchmark run: a fresh `multichat serve` on 127.0.0.1, loaded by several generators.

The server is started with `--config`, the hardening limits lifted as the peers' were (every
simulated member connects from 127.0.0.1). The load comes from `loadgen`, a small C program
(loadgen.c beside this file, built with the machine's C compiler into build/bench/), several
processes of it, so that the generator is not what is measured. In mode "ref" the server is
the C reference instead (reference.c, built the same way), driven as the text mode drives
multichat. This module starts the server and the generators and watches the server's CPU time
and memory in /proc; report.py turns what they saw into one JSON line per scenario and a table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from multichat.server.limits import OUTBOX_BYTES

from .backplane import BACKPLANE_SUFFIX, SERVERS, RedisError, running_redis
from .scenarios import REF_DIALECT, REF_MODE, Scenario

ROOT = Path(__file__).resolve().parents[2]
SOURCES = Path(__file__).parent
BUILD = ROOT / "build" / "bench"
PASSWORD = "bench-password"

# The limits a public room enforces that the peers had relaxed too: every simulated member
# comes from 127.0.0.1 and sends as fast as it can. Everything else (the outbox a slow reader
# may fill, frame sizes, idle timeouts) stays at its default.
RELAXED_LIMITS: dict[str, int | float] = {
    "connections_per_source": 100_000,
    "unauthenticated_per_source": 100_000,
    "unauthenticated_total": 100_000,
    "flood_per_second": 0,
    "failed_passwords_per_minute": 100_000,
    "failed_passwords_global_per_minute": 100_000,
    "max_members": 10_000,
}
# How often the server's CPU time and memory are read.
SAMPLE_SECONDS = 0.02
# Before each run, wait (up to --quiet-wait seconds) until other processes use at most this.
QUIET_CORES = 0.2
# How long the server may take to start and to stop.
START_SECONDS = 20.0
STOP_SECONDS = 15.0


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """The benchmark itself could not run (not: the server was slow)."""


# -- the compiled tools --


def build_tool(name: str) -> Path:
    """build/bench/NAME, compiled from NAME.c beside this file when missing or older than it.

    The tools: "loadgen", the load generator, and "reference", the C reference server.
    """
    source = SOURCES / f"{name}.c"
    binary = BUILD / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchError(f"no C compiler (cc or gcc) to build {source.name}; install gcc")
    BUILD.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed, so that two benchmarks starting at once never run half a binary.
    built = BUILD / f"{name}.{os.getpid()}"
    command = [compiler, "-O2", "-Wall", "-Wextra", "-o", str(built), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"building {source.name} failed:\n{done.stderr}")
    os.replace(built, binary)
    return binary


@dataclass(frozen=True)
class Tools:
    """The compiled helpers: the load generator and, unless --no-ref, the reference server."""

    loadgen: Path
    reference: Path | None = None


# -- the server --


class Sampler(threading.Thread):
    """Reads a process's CPU time (ns) and resident memory (KiB) from /proc, every few ms.

    The CPU time counts its child processes' too: a server with a data directory commits in
    one, work the server's own thread did before. The memory is its own, so that a join's
    figure per connection stays the server's (the history process's memory does not grow
    with the members)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[int, int, int]] = []  # (monotonic ns, cpu ns, rss KiB)
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def read(self) -> tuple[int, int, int] | None:
        usage = _usage(self.pid)
        if usage is None:
            return None
        cpu, rss = usage
        for child in _children(self.pid):
            more = _usage(child)  # (None: it ended after the listing)
            if more is not None:
                cpu += more[0]
        return time.monotonic_ns(), cpu, rss

    def sample(self) -> tuple[int, int, int] | None:
        sample = self.read()
        if sample is not None:
            with self._lock:
                self.samples.append(sample)
        return sample

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_SECONDS):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)

    def _at(self, t: int) -> tuple[int, int, int]:
        with self._lock:
            samples = list(self.samples)
        if not samples:
            raise BenchError("no samples of the server's CPU time")
        return min(samples, key=lambda s: abs(s[0] - t))

    def cpu_cores(self, t0: int, t1: int) -> float:
        a, b = self._at(t0), self._at(t1)
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0

    def rss_peak(self, t0: int, t1: int) -> int:
        with self._lock:
            inside = [s[2] for s in self.samples if t0 <= s[0] <= t1]
        return max(inside, default=self._at(t1)[2])


def _usage(pid: int) -> tuple[int, int] | None:
    """A process's CPU time (ns) and resident memory (KiB); None once it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            cpu = int(f.read().split()[0])
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return cpu, rss


def _children(pid: int) -> list[int]:
    """The processes `pid`'s threads started (Linux lists them per thread)."""
    children: list[int] = []
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(child) for child in f.read().split()]
    return children


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes, the kernel included)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float) -> float:
    """Wait up to `limit` seconds for the rest of the machine to go idle; the load seen last.

    On two cores, someone else's test run skews every number; better to start a little later.
    """
    give_up = time.monotonic() + limit
    while True:
        before = busy_cpu_seconds()
        time.sleep(0.5)
        load = (busy_cpu_seconds() - before) / 0.5
        if load <= QUIET_CORES or time.monotonic() >= give_up:
            return load
        log(f"waiting for the machine to quiet down ({load:.2f} cores busy)")
        time.sleep(1.0)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path


def write_config(folder: Path, extra: dict[str, int | float]) -> Path:
    limits = {**RELAXED_LIMITS, **extra}
    config = folder / "bench.toml"
    lines = ["[limits]", *(f"{key} = {value}" for key, value in limits.items())]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@contextmanager
def running_server(
    folder: Path, config: Path, *, ephemeral: bool = False, backplane: str | None = None
) -> Iterator[Server]:
    """`multichat serve` on 127.0.0.1 and a free port, stopped (SIGTERM) afterwards.

    Everything it keeps (history, certificate) lives in `folder`, which goes with the run.
    With `backplane` (a redis:// URL) it shares its room with every server on that Redis.
    """
    folder.mkdir(exist_ok=True)
    password_file = folder / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    log_path = folder / "server.log"
    command = [
        str(ROOT / ".venv" / "bin" / "multichat"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--config",
        str(config),
        "--password-file",
        str(password_file),
        # Its own data directory, empty: the room keeps history (and takes a lock) in its data
        # directory, by default the user's one per room name. Shared, a run would replay the
        # last run's messages to every member, two benchmarks at once would refuse each other,
        # and the user's own room would fill with benchmark traffic.
        *(["--ephemeral"] if ephemeral else ["--data-dir", str(folder / "data")]),
        *(["--backplane", backplane] if backplane else []),
    ]
    if not Path(command[0]).exists():
        raise BenchError(f"{command[0]} is missing: run scripts/bench, which installs it")
    with serving(command, log_path) as server:
        yield server


@contextmanager
def running_reference(
    folder: Path, binary: Path, limits: dict[str, int | float]
) -> Iterator[Server]:
    """The C reference server on 127.0.0.1 and a free port, stopped (SIGTERM) afterwards.

    It drops a member that does not read at the outbox size multichat is given in this run.
    """
    outbox = int(limits.get("outbox_bytes", OUTBOX_BYTES))
    command = [str(binary), "port=0", f"password={PASSWORD}", f"outbox={outbox}"]
    with serving(command, folder / "server.log") as server:
        yield server


@contextmanager
def serving(command: list[str], log_path: Path) -> Iterator[Server]:
    """Either server, its output in `log_path`, once it says which port it serves on."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
    try:
        port = wait_for_port(process, log_path)
        yield Server(process, port, log_path)
    finally:
        stop_process(process)


def wait_for_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    give_up = time.monotonic() + START_SECONDS
    # multichat logs it; the reference prints the same line on stdout.
    pattern = re.compile(r"serving room .* on port (\d+)")
    while time.monotonic() < give_up:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        found = pattern.search(text)
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise BenchError(f"the server exited with {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    raise BenchError(f"the server did not start within {START_SECONDS:.0f} s")


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


# -- the generators --


class Generator:
    """One loadgen process and a thread that hands its output lines to a queue."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines: Queue[str | None] = Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, give_up: float) -> str:
        """The rest of the next line that starts with `prefix`, before `give_up` (monotonic)."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, give_up - time.monotonic()))
            except Empty:
                raise BenchError(f"a load generator said nothing ({prefix} expected)") from None
            if line is None:
                code = self.process.wait()
                raise BenchError(f"a load generator exited with {code} before {prefix}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        if self.process.stdin is not None:
            with suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)


def slices(total: int, parts: int) -> list[tuple[int, int]]:
    """`total` members as `parts` contiguous (first, count) ranges."""
    parts = max(1, min(parts, total))
    size, extra = divmod(total, parts)
    out, first = [], 0
    for i in range(parts):
        count = size + (1 if i < extra else 0)
        out.append((first, count))
        first += count
    return out


@dataclass
class Setup:
    """What a run is measured on: its servers (two with a backplane) and Redis, if any."""

    servers: list[Server]
    redis: subprocess.Popen[bytes] | None = None


@contextmanager
def running(
    folder: Path, mode: str, tools: Tools, limits: dict[str, int | float], *, ephemeral: bool
) -> Iterator[Setup]:
    """The servers a mode is measured on: the reference for "ref"; `multichat serve`, or two
    of them on a Redis of their own for a mode ending in "/bp"."""
    if mode == REF_MODE:
        if tools.reference is None:
            raise BenchError("the reference server was not built (--no-ref)")
        with running_reference(folder, tools.reference, limits) as server:
            yield Setup([server])
        return
    config = write_config(folder, limits)
    if not mode.endswith(BACKPLANE_SUFFIX):
        with running_server(folder, config, ephemeral=ephemeral) as server:
            yield Setup([server])
        return
    try:
        with running_redis(folder) as (redis, url), ExitStack() as stack:
            folders = [folder / f"server{i}" for i in range(SERVERS)]
            servers = [
                stack.enter_context(running_server(f, config, ephemeral=ephemeral, backplane=url))
                for f in folders
            ]
            yield Setup(servers, redis)
    except RedisError as exc:
        raise BenchError(str(exc)) from None


class SamplerGroup:
    """Several processes' Samplers read as one: CPU and memory summed."""

    def __init__(self, pids: list[int]) -> None:
        self.samplers = [Sampler(pid) for pid in pids]

    def start(self) -> None:
        for sampler in self.samplers:
            sampler.start()

    def stop(self) -> None:
        for sampler in self.samplers:
            sampler.stop()

    def sample(self) -> tuple[int, int, int] | None:
        samples = [sampler.sample() for sampler in self.samplers]
        if not samples or any(sample is None for sample in samples):
            return None
        return (
            max(s[0] for s in samples if s),
            sum(s[1] for s in samples if s),
            sum(s[2] for s in samples if s),
        )

    def cpu_cores(self, t0: int, t1: int) -> float:
        return sum(sampler.cpu_cores(t0, t1) for sampler in self.samplers)

    def rss_peak(self, t0: int, t1: int) -> int:
        return sum(sampler.rss_peak(t0, t1) for sampler in self.samplers)


def run_once(
    sc: Scenario,
    mode: str,
    tools: Tools,
    limits: dict[str, int | float],
    *,
    ephemeral: bool = False,
) -> dict[str, Any]:
    """One run on fresh servers: the generators' results merged, and the servers' numbers."""
    stalled = sc.members - 1 if sc.stalled else -1
    dialect = REF_DIALECT if mode == REF_MODE else mode.removesuffix(BACKPLANE_SUFFIX)
    with tempfile.TemporaryDirectory(prefix="multichat-bench-") as tmp:
        folder = Path(tmp)
        with running(folder, mode, tools, limits, ephemeral=ephemeral) as setup:
            servers = setup.servers
            sampler = SamplerGroup([server.process.pid for server in servers])
            sampler.start()
            redis = SamplerGroup([setup.redis.pid] if setup.redis is not None else [])
            redis.start()
            generators: list[Generator] = []
            try:
                # With two servers, each generator's members go to one of them, in turn.
                for i, (first, count) in enumerate(slices(sc.members, sc.procs)):
                    args = {
                        "port": servers[i % len(servers)].port,
                        "password": PASSWORD,
                        "mode": dialect,
                        "scenario": sc.kind,
                        "first": first,
                        "count": count,
                        "total": sc.members,
                        "senders": sc.senders,
                        "per_sender": sc.per_sender,
                        "rate": sc.rate,
                        "stalled": stalled,
                        "window": sc.window,
                        "text_len": sc.text_len,
                        "deadline": sc.deadline,
                        "idle": sc.idle,
                        "bufsize": 16384 if sc.kind == "join" else 65536,
                        "spread": int(len(servers) > 1),
                    }
                    command = [str(tools.loadgen), *(f"{k}={v}" for k, v in args.items())]
                    generators.append(Generator(command))
                give_up = time.monotonic() + sc.deadline + 10
                joined = sum(int(g.expect("READY", give_up)) for g in generators)
                if sc.kind != "join" and joined != sc.members:
                    raise BenchError(f"only {joined} of {sc.members} members could join")
                # Let the last join notices go out before the clock starts (through Redis, too).
                time.sleep(0.05 if len(servers) == 1 else 0.5)
                before = sampler.sample()
                redis_before = redis.sample()
                busy_before = busy_cpu_seconds()
                start = time.monotonic_ns() + 20_000_000
                for g in generators:
                    g.say(f"GO {start}")
                results = [json.loads(g.expect("RESULT", give_up)) for g in generators]
                after = sampler.sample()
                redis_after = redis.sample()
                busy = busy_cpu_seconds() - busy_before
                # Read before the generators close their connections, which the log reports too.
                log_text = "".join(
                    server.log_path.read_text(encoding="utf-8", errors="replace")
                    for server in servers
                )
            finally:
                for g in generators:
                    g.finish()
                sampler.stop()
                redis.stop()
            if before is None or after is None:
                raise BenchError("the server died during the run")
    out = summarize_run(sc, results, sampler, start, before, after, log_text)
    # Whatever else ran on the machine meanwhile (other people's tests, say) skews the numbers.
    seconds = (after[0] - before[0]) / 1e9
    own = (after[1] - before[1]) / 1e9 + sum(r["cpu_s"] for r in results)
    if setup.redis is not None and redis_before is not None and redis_after is not None:
        redis_cpu = (redis_after[1] - redis_before[1]) / 1e9
        own += redis_cpu
        out["redis_cpu_cores"] = (
            redis.cpu_cores(start, start + int(sc.duration * 1e9))
            if sc.kind == "rate"
            else redis_cpu / seconds
        )
    out["other_cpu_cores"] = max(0.0, busy - own) / seconds if seconds > 0 else 0.0
    return out


def summarize_run(
    sc: Scenario,
    results: list[dict[str, Any]],
    sampler: SamplerGroup,
    start: int,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
    log_text: str,
) -> dict[str, Any]:
    total = {
        key: sum(r[key] for r in results)
        for key in (
            "joined",
            "join_failures",
            "members_complete",
            "closed_early",
            "errors",
            "sent",
            "received",
            "distinct",
            "expected",
            "duplicated",
            "reordered",
            "merged",
            "split",
            "unexpected",
        )
    }
    hist: dict[int, int] = {}
    for r in results:
        for index, count in r["hist"]:
            hist[index] = hist.get(index, 0) + count
    first_send = min((r["first_send_ns"] for r in results if r["first_send_ns"]), default=start)
    last_recv = max((r["last_recv_ns"] for r in results), default=0)
    done = max((r["done_ns"] for r in results), default=0)
    end = max(last_recv, done) or first_send
    stalled_name = f"u{sc.members - 1}" if sc.stalled else None
    leaves = [leave for r in results for leave in r["leaves"]]
    seen: dict[str, tuple[str, int]] = {}
    for name, reason, t in leaves:
        if name not in seen or t < seen[name][1]:
            seen[name] = (reason, t)
    # Who the server dropped: its log says so even when nobody is left to see the notice.
    dropped_names = set(re.findall(r"dropped (u\d+) ", log_text))
    dropped_names |= {n for n, (reason, _) in seen.items() if reason != "quit"}
    dropped_names.discard(stalled_name or "")
    dropped = sorted(dropped_names, key=lambda n: int(n[1:]))
    out: dict[str, Any] = {
        **total,
        "hist": hist,
        "lat_max_ns": max(r["lat_max_ns"] for r in results),
        "timed_out": any(r["timed_out"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "elapsed_s": max(end - first_send, 1_000_000) / 1e9,
        "generator_cpu_cores": sum(r["cpu_s"] for r in results) / max(1, after[0] - start) * 1e9,
        "dropped": dropped,
        "rss_start_kib": before[2],
        "rss_peak_kib": sampler.rss_peak(before[0], after[0]),
        "rss_end_kib": after[2],
        "server_cpu_cores": (after[1] - before[1]) / max(1, after[0] - before[0]),
        "too_slow_in_log": log_text.count("too slow"),
    }
    if sc.kind == "rate":
        # The steady state: from the first message to the last one sent.
        out["server_cpu_cores"] = sampler.cpu_cores(start, start + int(sc.duration * 1e9))
    if sc.kind == "join":
        complete = total["members_complete"] == sc.members
        out["join_s"] = (done - start) / 1e9 if complete and done else None
        out["elapsed_s"] = (after[0] - start) / 1e9
    if stalled_name is not None:
        reason, t = seen.get(stalled_name, ("", 0))
        out["stalled_reason"] = reason or None
        out["stalled_dropped_after_s"] = (t - start) / 1e9 if t else None
    return out
