"""The served targets of a `tritonize plan ... --baselines` run, read from its results.json.

    .venv/bin/python -m benchmarks.investigations.plan_targets bench_results/plan-.../results.json [--slo-ms 50]

Prints three tables:
- each system against FastAPI + PyTorch: req/s under the SLO (as the planner counts it) and at the peak,
  with the int8 >= 4.0x and fp32 >= 2.0x targets;
- dynamic batching on / off at every load level (target: >= 1 at every level; the best level >= 1.3
  on embed-short), pooled over the rounds and round by round. Where the rounds disagree on the side of 1,
  the difference is within what this machine's speed moves between windows. A plan run with `--control`
  has a second, identical batching-off server: its ratio to the first (A/A) at each level is how far
  two servers doing the same work differ in this run, and the table reads each on / off ratio below 1
  against it;
- the tail: the largest p99 / p50 of each system at the levels up to its peak (target: <= 3 for the
  served systems).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tritonize.planner.capacity import PlanResults, Point, max_throughput_under_slo

console = Console(width=160)
INT8_TARGET, FP32_TARGET = 4.0, 2.0  # x FastAPI at the SLO
OFF = "batching off"


def fastapi_ratios(results: PlanResults, slo_ms: float, percentile: int = 95) -> Table:
    points = results.points
    systems = list(dict.fromkeys(p.system for p in points))
    under = {s: max_throughput_under_slo([p for p in points if p.system == s], slo_ms, percentile) for s in systems}
    peak = {s: max(p.rps for p in points if p.system == s) for s in systems}
    fastapi = next(s for s in systems if s.startswith("FastAPI"))
    table = Table(title=f"req/s, and x FastAPI + PyTorch (p{percentile} <= {slo_ms:g} ms)")
    for col in ("system", "under SLO", "x FastAPI", "peak", "x FastAPI (peak)", "target", "met"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for s in systems:
        r_slo = under[s] / under[fastapi] if under[fastapi] else float("inf")
        target = None if s == fastapi or OFF in s else (INT8_TARGET if "int8" in s else FP32_TARGET)
        met = "" if target is None else ("yes" if r_slo >= target else "NO")
        table.add_row(s, f"{under[s]:.1f}", f"{r_slo:.2f}", f"{peak[s]:.1f}", f"{peak[s] / peak[fastapi]:.2f}",
                      "" if target is None else f">= {target}x", met)
    return table


def _off_systems(results: PlanResults) -> tuple[str | None, str | None]:
    """The 'batching off' baseline and its A/A copy (None where the plan ran without them)."""
    offs = {s: v for s, v in results.variants.items() if not v.get("dynamic_batching", True)}
    off = next((s for s, v in offs.items() if "copy_of" not in v), None)
    copy = next((s for s, v in offs.items() if v.get("copy_of") == off), None) if off else None
    return off, copy


def _ratio_rows(results: PlanResults, systems: list[str], base: str) -> list[tuple[str, int, float, list[float]]]:
    pooled = {(p.system, p.users): p.rps for p in results.points}
    per_round = {(r["system"], r["users"], r.get("round", 0)): r["rps"] for r in results.runs}
    rounds = sorted({r.get("round", 0) for r in results.runs})
    rows = []
    for system in systems:
        for users in sorted({u for s, u in pooled if s == system}):
            by_round = [per_round[(system, users, k)] / per_round[(base, users, k)] for k in rounds
                        if (system, users, k) in per_round and per_round.get((base, users, k))]
            rows.append((system, users, pooled[(system, users)] / pooled[(base, users)], by_round))
    return rows


def on_off_rows(results: PlanResults) -> list[tuple[str, int, float, list[float]]]:
    """(batching-on system, users, pooled on/off req/s, the same per round) for every system that serves
    the same pipeline as the 'batching off' baseline with dynamic batching on."""
    off, _ = _off_systems(results)
    if off is None:
        return []
    model = results.variants[off]["model"]
    ons = [s for s, v in results.variants.items() if v.get("dynamic_batching", True) and v["model"] == model]
    return _ratio_rows(results, ons, off)


def control_ratios(results: PlanResults) -> dict[int, float]:
    """users -> the A/A copy's req/s / the batching-off server's, pooled (empty without `--control`)."""
    off, copy = _off_systems(results)
    return {users: ratio for _, users, ratio, _ in _ratio_rows(results, [copy], off)} if copy else {}


def on_off_verdict(ratio: float, control: float | None) -> str:
    """'yes' at >= 1; below 1, 'within A/A' where two identical servers differed at least as much at this
    level in the same run (so the run cannot tell the two configs apart there), else 'NO'."""
    if ratio >= 1:
        return "yes"
    if control is not None and 1 - ratio <= abs(1 - control):
        return "within A/A"
    return "NO"


def on_off_table(rows: list[tuple[str, int, float, list[float]]], controls: dict[int, float] | None = None) -> Table:
    controls = controls or {}
    table = Table(title="dynamic batching on / off, req/s at each load level (target >= 1 at every level)")
    columns = ["system", "users", "on / off", "by round", "rounds agree"] + (["A/A copy / off", ">= 1"] if controls else [])
    for col in columns:
        table.add_column(col, justify="left" if col == "system" else "right")
    for on, users, ratio, by_round in rows:
        agree = all(r >= 1 for r in by_round) or all(r < 1 for r in by_round)
        cells = [on, str(users), f"{ratio:.2f}", ", ".join(f"{r:.2f}" for r in by_round), "yes" if agree else "no: within the noise"]
        if controls:
            aa = controls.get(users)
            cells += ["" if aa is None else f"{aa:.2f}", on_off_verdict(ratio, aa)]
        table.add_row(*cells)
    return table


def tail_ratios(points: list[Point]) -> dict[str, float]:
    """Per system, the largest p99 / p50 at the levels up to the one with its peak req/s (past the peak
    the system is saturated and queues grow by design)."""
    out = {}
    for s in dict.fromkeys(p.system for p in points):
        mine = sorted((p for p in points if p.system == s), key=lambda p: p.users)
        peak = max(range(len(mine)), key=lambda i: mine[i].rps)
        out[s] = max(p.p99_ms / p.p50_ms for p in mine[: peak + 1] if p.p50_ms > 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a plan's results.json")
    ap.add_argument("--slo-ms", type=float, default=50.0, help="the SLO the plan used")
    args = ap.parse_args()
    results = PlanResults.load(args.results)
    console.print(fastapi_ratios(results, args.slo_ms))
    rows, controls = on_off_rows(results), control_ratios(results)
    if rows:
        console.print(on_off_table(rows, controls))
        for on in dict.fromkeys(r[0] for r in rows):
            mine = [r for r in rows if r[0] == on]
            best = max(mine, key=lambda r: r[2])
            aa = ""
            if controls:
                verdicts = [on_off_verdict(r[2], controls.get(r[1])) for r in mine]
                aa = f"; not below off by more than the A/A difference at any level: {'NO' if 'NO' in verdicts else 'yes'}"
            console.print(f"{on}: on >= off at every level: {'yes' if all(r[2] >= 1 for r in mine) else 'NO'}{aa}; "
                          f"best level {best[1]} users: {best[2]:.2f}x off (embed-short target >= 1.3)")
    for s, r in tail_ratios(results.points).items():
        verdict = "the baseline, not a target" if s.startswith("FastAPI") else ("met" if r <= 3 else "MISSED")
        console.print(f"tail, {s}: max p99 / p50 up to the peak {r:.2f} (target <= 3): {verdict}")


if __name__ == "__main__":
    main()
