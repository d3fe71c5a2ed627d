"""What the generators saw, as numbers: percentiles, one JSON object per scenario, a table."""

from __future__ import annotations

import statistics
from typing import Any

from .scenarios import (
    BOUNDED_RSS_GROWTH_KIB,
    HISTORY_BURST_TARGET,
    HISTORY_P99_TARGET,
    REF_BURST_TARGET,
    REF_JOIN_TIME_TARGET,
    REF_KIB_PER_CONNECTION_TARGET,
    REF_MODE,
    REF_P99_TARGET,
    TARGETS,
    WS_VS_JSON_TARGET,
    Scenario,
)

# The figures compared with the reference's, each as multichat's / the reference's: above 1 is
# more (faster for a rate; slower, costlier or bigger for the rest).
REF_FIGURES = (
    "deliveries_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_cores",
    "server_rss_peak_kib",
    "join_s",
    "rss_per_connection_kib",
)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The latency range (ns) of one loadgen histogram bucket (see bucket_of in loadgen.c)."""
    if index < 128:
        return index, index + 1
    shift = index // 64 - 1
    mantissa = index - shift * 64
    return mantissa << shift, (mantissa + 1) << shift


def percentile_ms(hist: dict[int, int], fraction: float) -> float | None:
    count = sum(hist.values())
    if not count:
        return None
    wanted = fraction * count
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= wanted:
            low, high = bucket_bounds(index)
            return (low + high) / 2 / 1e6
    return None  # pragma: no cover


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def scenario_report(sc: Scenario, mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON line of one scenario in one mode: its runs merged, rates as their median."""
    hist: dict[int, int] = {}
    for run in runs:
        for index, count in run["hist"].items():
            hist[index] = hist.get(index, 0) + count

    def total(key: str) -> int:
        return sum(int(run[key]) for run in runs)

    # A round that lost messages measured how fast members were dropped, not fan-out: its rate
    # is shown per round but not counted in the median.
    rates = [run["distinct"] / run["elapsed_s"] if run["elapsed_s"] > 0 else 0.0 for run in runs]
    whole = [
        rate for rate, run in zip(rates, runs, strict=True) if run["distinct"] == run["expected"]
    ]
    lost = total("expected") - total("distinct") if sc.kind != "join" else 0
    report: dict[str, Any] = {
        "scenario": sc.name,
        "mode": mode,
        "members": sc.members,
        "senders": sc.senders,
        "messages": sc.senders * sc.per_sender * len(runs),
        "rounds": len(runs),
        "deliveries": total("distinct"),
        "expected": total("expected"),
        "deliveries_per_s": round(statistics.median(whole))
        if whole and sc.kind != "join"
        else None,
        "p50_ms": rounded(percentile_ms(hist, 0.50)),
        "p99_ms": rounded(percentile_ms(hist, 0.99)),
        "max_ms": rounded(max(run["lat_max_ns"] for run in runs) / 1e6) if hist else None,
        "lost": lost,
        "duplicated": total("duplicated"),
        "reordered": total("reordered"),
        "merged": total("merged"),
        "split": total("split"),
        "unexpected": total("unexpected"),
        "errors": total("errors"),
        "first_error": next((run["first_error"] for run in runs if run["first_error"]), ""),
        "joined": total("joined"),
        "complete": total("members_complete"),
        "join_failures": total("join_failures"),
        "disconnected": total("closed_early"),
        "dropped": sorted({name for run in runs for name in run["dropped"]}),
        "timed_out": any(run["timed_out"] for run in runs),
        "server_cpu_cores": rounded(statistics.median(run["server_cpu_cores"] for run in runs)),
        "server_rss_kib": {
            "start": max(run["rss_start_kib"] for run in runs),
            "peak": max(run["rss_peak_kib"] for run in runs),
            "end": max(run["rss_end_kib"] for run in runs),
        },
        "generator_cpu_cores": rounded(max(run["generator_cpu_cores"] for run in runs)),
        "generator_procs": sc.procs,
        "other_cpu_cores": rounded(max(run["other_cpu_cores"] for run in runs), 2),
        "elapsed_s": rounded(statistics.median(run["elapsed_s"] for run in runs)),
    }
    if all("redis_cpu_cores" in run for run in runs):
        report["redis_cpu_cores"] = rounded(
            statistics.median(run["redis_cpu_cores"] for run in runs)
        )
    if sc.rounds > 1:
        report["rounds_deliveries_per_s"] = [round(rate) for rate in rates]
    if sc.kind == "rate":
        report["offered_deliveries_per_s"] = round(
            sc.rate * sc.senders * (sc.members - (1 if sc.stalled else 0))
        )
    if sc.kind == "join":
        run = runs[0]
        report["join_s"] = rounded(run["join_s"])
        # Per member in the room at the end (all of them, unless the run ran out of time).
        growth = run["rss_end_kib"] - run["rss_start_kib"]
        report["rss_per_connection_kib"] = rounded(growth / max(1, run["joined"]), 2)
    if sc.stalled:
        run = runs[0]
        report["stalled_reason"] = run["stalled_reason"]
        report["stalled_dropped_after_s"] = rounded(run["stalled_dropped_after_s"])
        report["rss_growth_kib"] = run["rss_peak_kib"] - run["rss_start_kib"]
    report["clean"] = not any(
        report[key] for key in ("lost", "duplicated", "reordered", "merged", "split", "unexpected")
    ) and not any(report[key] for key in ("dropped", "disconnected", "timed_out", "join_failures"))
    report["target"] = TARGETS[sc.name]
    report["met"] = target_met(sc, report)
    return report


def compare_with_json(report: dict[str, Any], json_report: dict[str, Any]) -> None:
    """ws burst: its deliveries/s as a fraction of JSON-over-TCP's in the same run, judged.

    ws carries the same JSON objects as json, only framed; the target is that the framing costs
    at most a fifth of the rate. Without a JSON rate (every JSON round lost messages) there is
    no ratio, and the ws row is judged by the burst target alone.
    """
    ws_rate, json_rate = report["deliveries_per_s"], json_report["deliveries_per_s"]
    ratio = round(ws_rate / json_rate, 3) if ws_rate and json_rate else None
    report["vs_json"] = ratio
    # Round i of each mode ran back to back (the modes take turns), so each pair saw much the
    # same machine: their ratios show how much of the spread is the machine's.
    pairs = zip(
        report.get("rounds_deliveries_per_s", []),
        json_report.get("rounds_deliveries_per_s", []),
        strict=False,
    )
    report["vs_json_rounds"] = [round(ws / js, 3) if js else None for ws, js in pairs]
    report["target"] += f", and >= {WS_VS_JSON_TARGET:.0%} of JSON's deliveries/s in the same run"
    if ratio is not None:
        report["met"] = report["met"] and ratio >= WS_VS_JSON_TARGET


def compare_with_memory(sc: Scenario, disk: dict[str, Any], memory: dict[str, Any]) -> None:
    """The history's cost, judged on the data-directory row: burst keeps 90% of the --ephemeral
    rate, steady's p99 stays within 1.5x of it (each pair of rounds ran back to back)."""
    if sc.name == "burst":
        rate, base = disk["deliveries_per_s"], memory["deliveries_per_s"]
        ratio = round(rate / base, 3) if rate and base else None
        disk["vs_memory"] = ratio
        disk["target"] += f"; with history >= {HISTORY_BURST_TARGET:.0%} of --ephemeral's"
        disk["met_history"] = ratio is not None and ratio >= HISTORY_BURST_TARGET
    elif sc.name == "steady":
        p99, base = disk["p99_ms"], memory["p99_ms"]
        ratio = round(p99 / base, 3) if p99 and base else None
        disk["vs_memory"] = ratio
        disk["target"] += f"; with history p99 <= {HISTORY_P99_TARGET}x --ephemeral's"
        disk["met_history"] = ratio is not None and ratio <= HISTORY_P99_TARGET


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, None when either is missing or zero (a figure the run did not produce)."""
    return round(value / base, 3) if value and base else None


def figure(r: dict[str, Any], key: str) -> float | None:
    """One of REF_FIGURES from a report, None where the scenario has no such figure."""
    if key == "server_rss_peak_kib":
        return float(r["server_rss_kib"]["peak"])
    value = r.get(key)
    return None if value is None else float(value)


def compare_with_ref(sc: Scenario, report: dict[str, Any], ref: dict[str, Any]) -> None:
    """Every figure of a multichat row as a ratio to the C reference's (issue 17), judged.

    The reference ran round by round with the modes, so each ratio compares two servers under
    the same machine noise. `met_ref` is None where issue 17 sets no target relative to it.
    """
    # A rate at a paced load is the offered rate, the same for both: only burst's says anything.
    keys = [k for k in REF_FIGURES if k != "deliveries_per_s" or sc.kind == "burst"]
    ratios = {key: ratio(figure(report, key), figure(ref, key)) for key in keys}
    report["vs_ref"] = {key: value for key, value in ratios.items() if value is not None}
    if sc.rounds > 1:
        pairs = zip(
            report.get("rounds_deliveries_per_s", []),
            ref.get("rounds_deliveries_per_s", []),
            strict=False,
        )
        report["vs_ref_rounds"] = [ratio(mine, theirs) for mine, theirs in pairs]
    judged: bool | None = None
    if sc.kind == "burst":
        rate = ratios.get("deliveries_per_s")
        judged = rate is not None and rate >= REF_BURST_TARGET
        report["ref_target"] = f">= {REF_BURST_TARGET}x the reference's deliveries/s"
    elif sc.name == "steady" or sc.stalled:
        p99 = ratios.get("p99_ms")
        judged = p99 is not None and p99 <= REF_P99_TARGET
        report["ref_target"] = f"p99 <= {REF_P99_TARGET}x the reference's"
    elif sc.kind == "join":
        took, kib = ratios.get("join_s"), report.get("rss_per_connection_kib")
        judged = (
            took is not None
            and took <= REF_JOIN_TIME_TARGET
            and kib is not None
            and kib <= REF_KIB_PER_CONNECTION_TARGET
        )
        report["ref_target"] = (
            f"time <= {REF_JOIN_TIME_TARGET}x the reference's, "
            f"<= {REF_KIB_PER_CONNECTION_TARGET:g} KiB per connection"
        )
    if judged is not None and not ref["clean"]:
        # A reference run that lost messages or members is no yardstick: no verdict.
        judged = None
        report["ref_target"] += " (no verdict: the reference's run was not clean)"
    report["met_ref"] = None if judged is None else judged and report["clean"]


def target_met(sc: Scenario, r: dict[str, Any]) -> bool:
    """Whether the issue's target for this scenario was met (only meaningful at full size)."""
    if not r["clean"]:
        return False
    if sc.name == "burst":
        return bool(r["deliveries_per_s"] and r["deliveries_per_s"] > 1_830_000)
    if sc.name == "paced":
        return bool(r["server_cpu_cores"] is not None and r["server_cpu_cores"] <= 0.5)
    if sc.name == "steady":
        return bool(r["p99_ms"] is not None and r["p99_ms"] < 3.0)
    if sc.name == "join":
        return bool(
            r["join_s"] is not None and r["join_s"] < 10 and r["rss_per_connection_kib"] < 8
        )
    if sc.stalled:
        return bool(
            r["stalled_reason"]
            and r["p99_ms"] is not None
            and r["p99_ms"] < 3.0
            and r["rss_growth_kib"] < BOUNDED_RSS_GROWTH_KIB
        )
    return False


def headline(r: dict[str, Any]) -> str:
    """The number each scenario is judged by, for the table."""
    name = r["scenario"]
    if name == "burst":
        if r["deliveries_per_s"] is None:
            dropped = max(len(r["dropped"]), r["disconnected"])
            return f"{r['lost'] / max(1, r['expected']):.0%} lost, {dropped} members dropped"
        rate = f"{r['deliveries_per_s'] / 1e6:.2f}M deliveries/s"
        if r.get("vs_json") is not None:
            rate += f" ({r['vs_json']:.0%} of json)"
        if r.get("vs_memory") is not None:
            rate += f" ({r['vs_memory']:.0%} of /mem)"
        return rate + (f", {r['lost']} lost" if r["lost"] else "")
    if name == "paced":
        cores = f"{r['server_cpu_cores']:.2f} cores"
        if r.get("redis_cpu_cores") is not None:
            cores += f" + Redis {r['redis_cpu_cores']:.2f}"
        if r.get("vs_one_server_cpu") is not None:
            verdict = "yes" if r.get("met_backplane") else "NO"
            cores += f" ({r['vs_one_server_cpu']:.2f}x one server per delivery: {verdict})"
        return cores
    if name == "steady":
        versus = f" ({r['vs_memory']:.2f}x /mem)" if r.get("vs_memory") is not None else ""
        if r.get("vs_one_server_p99") is not None:
            verdict = "yes" if r.get("met_backplane") else "NO"
            versus += f" ({r['vs_one_server_p99']:.2f}x one server: {verdict})"
        return f"p99 {r['p99_ms']} ms{versus}"
    if name == "join":
        took = (
            f"{r['join_s']:.3g} s"  # the reference's quick join takes hundredths of a second
            if r["join_s"] is not None
            else f"{r['elapsed_s']:.0f} s: {r['joined']} joined, {r['complete']} saw all"
        )
        return f"{took} / {r['rss_per_connection_kib']:.1f} KiB"
    if "stalled_reason" in r:
        after = r["stalled_dropped_after_s"]
        dropped = f"dropped at {after:.1f} s" if after is not None else "NOT dropped"
        return f"p99 {r['p99_ms']} ms, {dropped}, +{r['rss_growth_kib'] // 1024} MiB"
    return ""


def versus_ref(r: dict[str, Any]) -> str:
    """The table's "vs ref" cell: the figures issue 17 judges, as ratios, and the verdict."""
    if r["mode"] == REF_MODE:
        return "(reference)"
    if "vs_ref" not in r:
        return "-"
    vs = r["vs_ref"]

    def x(key: str, name: str) -> str:
        return f"{name} {vs[key]:.2f}x" if key in vs else f"{name} -"

    name = r["scenario"]
    if name == "burst":
        cell = x("deliveries_per_s", "rate")
    elif name == "join":
        kib = r.get("rss_per_connection_kib")
        cell = x("join_s", "time") + (f", {kib:.1f} KiB" if kib is not None else "")
    elif name == "paced":
        cell = x("server_cpu_cores", "cpu")
    else:
        cell = x("p99_ms", "p99")
    if r.get("met_ref") is not None:
        cell += " yes" if r["met_ref"] else " NO"
    return cell


def table(reports: list[dict[str, Any]]) -> str:
    head = (
        "scenario",
        "mode",
        "result",
        "met",
        "vs ref",
        "lost/dup/reord/merged/split",
        "p50/p99/max ms",
        "srv CPU",
        "srv RSS peak",
        "gen CPU",
        "other CPU",
    )
    rows = [head]
    for r in reports:
        integrity = "/".join(
            str(r[k]) for k in ("lost", "duplicated", "reordered", "merged", "split")
        )
        if r["dropped"] or r["disconnected"]:
            integrity += f" ({max(len(r['dropped']), r['disconnected'])} dropped)"
        latency = "/".join(
            "-" if r[k] is None else f"{r[k]:g}" for k in ("p50_ms", "p99_ms", "max_ms")
        )
        rows.append(
            (
                r["scenario"],
                r["mode"],
                headline(r),
                "yes" if r["met"] else "NO",
                versus_ref(r),
                integrity,
                latency,
                f"{r['server_cpu_cores']:.2f}",
                f"{r['server_rss_kib']['peak'] / 1024:.1f} MiB",
                f"{r['generator_cpu_cores']:.2f}",
                f"{r['other_cpu_cores']:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    for r in reports:
        if "vs_json" in r:
            lines.append("")
            lines.append(ws_verdict(r))
    if any("vs_ref" in r for r in reports):
        lines.append("")
        lines.append(
            "vs ref: multichat's figure / the C reference's (reference.c), round by round in the "
            f"same run; issue 17 wants burst rate >= {REF_BURST_TARGET}x, steady and non-reader "
            f"p99 <= {REF_P99_TARGET}x, join time <= {REF_JOIN_TIME_TARGET}x and "
            f"<= {REF_KIB_PER_CONNECTION_TARGET:g} KiB per connection"
        )
    return "\n".join(lines)


def ws_verdict(r: dict[str, Any]) -> str:
    """The line under the table that says how ws's burst compares with json's."""
    want = f"target >= {WS_VS_JSON_TARGET:.0%}"
    if r["vs_json"] is None:
        return f"{r['scenario']}: ws/json deliveries/s: no ratio (a mode lost messages; {want})"
    points = (WS_VS_JSON_TARGET - r["vs_json"]) * 100
    problems = [f"{points:.1f} points short"] if points > 0 else []
    if not r["clean"]:
        # The median counts only rounds that lost nothing; the target wants all of them so.
        problems.append(f"{r['lost']} lost" if r["lost"] else "not clean (see its row)")
    verdict = "NOT met, " + ", ".join(problems) if problems else "met"
    share = f"ws delivers {r['vs_json']:.1%} of json's deliveries/s"
    return f"{r['scenario']}: {share} ({want}): {verdict}"
