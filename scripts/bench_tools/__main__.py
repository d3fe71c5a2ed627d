"""`scripts/bench`: parse the options, run every scenario in every mode and against the C
reference server, print the results."""

from __future__ import annotations

import argparse
import json
import resource
import sys
from dataclasses import replace
from typing import Any

from .backplane import BACKPLANE_SCENARIOS, BACKPLANE_SUFFIX, compare_with_one_server
from .report import (
    compare_with_json,
    compare_with_memory,
    compare_with_ref,
    scenario_report,
    table,
)
from .run import BenchError, Tools, build_tool, log, run_once, wait_for_quiet
from .scenarios import MODE_GROUPS, MODES, REF_MODE, full_scenarios, paced_at, quick_scenarios

# Which servers each --storage runs: False a fresh data directory, True --ephemeral.
STORAGES = {"disk": (False,), "memory": (True,), "both": (False, True)}


def label(mode: str, memory: bool, storages: tuple[bool, ...]) -> str:
    """The mode as the report names it; "json/mem" is the --ephemeral twin in a both-run."""
    return f"{mode}/mem" if memory and len(storages) == 2 and mode != REF_MODE else mode


def parse_limit(text: str) -> tuple[str, int | float]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--limit wants KEY=VALUE, not {text!r}")
    try:
        number: int | float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--limit {key} wants a number") from None
    return key.strip(), number


def raise_open_files() -> None:
    """5,000 members need 5,000 descriptors in the server and as many in the generators."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark a real `multichat serve` on 127.0.0.1 (see docs/benchmarks.md).",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: prove it works")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in full_scenarios()],
        help="run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--mode",
        choices=[*MODES, *MODE_GROUPS],
        default="all",
        help="json (JSON lines over TCP), text, ws (JSON over WebSocket), "
        "both (json and text) or all (the default)",
    )
    parser.add_argument("--procs", type=int, help="load generator processes (default 2)")
    parser.add_argument(
        "--storage",
        choices=["disk", "memory", "both"],
        default="disk",
        help="disk: a fresh data directory per run (history in SQLite); memory: --ephemeral; "
        "both: each mode both ways, round by round, with the history's cost judged",
    )
    parser.add_argument(
        "--no-ref",
        action="store_true",
        help="leave out the C reference server (reference.c), which otherwise runs beside "
        "multichat in every scenario, round by round, as mode ref",
    )
    parser.add_argument("--rounds", type=int, help="burst rounds (median reported)")
    parser.add_argument(
        "--paced-rate",
        type=float,
        metavar="MSGS",
        help="paced at this many messages a second instead of its own (4,900; 1,500 with "
        "--quick), for as long: its target then says nothing, while two servers against one "
        "(--backplane) still compare",
    )
    parser.add_argument(
        "--limit",
        action="append",
        type=parse_limit,
        default=[],
        metavar="KEY=VALUE",
        help="another [limits] value for the server's config (e.g. outbox_bytes=1048576)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="SECONDS",
        help="before each run, wait up to this long for other processes to go idle "
        "(default 60, or 0 with --quick)",
    )
    parser.add_argument(
        "--backplane",
        action="store_true",
        help="each mode also on two servers sharing the room through a Redis of their own "
        "(mode/bp), judged against one server (issue 16); by default the paced and steady "
        "scenarios only",
    )
    args = parser.parse_args(argv)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else 0 if args.quick else 60

    scenarios = quick_scenarios() if args.quick else full_scenarios()
    if args.scenario:
        scenarios = [s for s in scenarios if s.name in args.scenario]
    elif args.backplane:
        scenarios = [s for s in scenarios if s.name in BACKPLANE_SCENARIOS]
    if args.procs:
        scenarios = [replace(s, procs=args.procs) for s in scenarios]
    if args.paced_rate:
        scenarios = paced_at(scenarios, args.paced_rate)
    if args.rounds:
        scenarios = [replace(s, rounds=args.rounds) if s.kind == "burst" else s for s in scenarios]
    modes = list(MODE_GROUPS.get(args.mode, (args.mode,)))
    limits = dict(args.limit)

    raise_open_files()
    try:
        tools = Tools(build_tool("loadgen"), None if args.no_ref else build_tool("reference"))
        reports = []
        for sc in scenarios:
            # Round by round, every mode in turn, the reference last: whatever else the machine
            # does meanwhile weighs on each mode alike, so they compare fairly within one run.
            storages = STORAGES[args.storage]
            variants = [(mode, memory) for mode in modes for memory in storages]
            if args.backplane:
                variants += [(mode + BACKPLANE_SUFFIX, memory) for mode, memory in variants]
            if tools.reference is not None:
                variants.append((REF_MODE, False))
            runs: dict[tuple[str, bool], list[dict[str, Any]]] = {v: [] for v in variants}
            for i in range(sc.rounds):
                for mode, memory in variants:
                    suffix = f" round {i + 1}/{sc.rounds}" if sc.rounds > 1 else ""
                    log(f"{sc.name} ({label(mode, memory, storages)}){suffix}")
                    if quiet_wait > 0:
                        wait_for_quiet(quiet_wait)
                    runs[mode, memory].append(run_once(sc, mode, tools, limits, ephemeral=memory))
            by_mode = {
                label(*v, storages): scenario_report(sc, label(*v, storages), runs[v])
                for v in variants
            }
            if sc.kind == "burst" and "ws" in by_mode and "json" in by_mode:
                compare_with_json(by_mode["ws"], by_mode["json"])
            if len(storages) == 2:
                for mode in modes:
                    compare_with_memory(sc, by_mode[mode], by_mode[f"{mode}/mem"])
            if args.backplane:
                for mode in modes:
                    alone = by_mode[label(mode, storages[0], storages)]
                    shared = by_mode[label(mode + BACKPLANE_SUFFIX, storages[0], storages)]
                    compare_with_one_server(sc, shared, alone)
            if REF_MODE in by_mode:
                for name, report in by_mode.items():
                    if name != REF_MODE:
                        compare_with_ref(sc, report, by_mode[REF_MODE])
            for report in by_mode.values():
                if limits:
                    report["limits"] = limits
                print(json.dumps(report), flush=True)
                reports.append(report)
    except BenchError as exc:
        log(str(exc))
        return 2
    print()
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
