"""What Triton's dynamic batcher costs a request when no batch forms: one user, closed loop, the same
pipeline served with dynamic batching on and off, and a second batching-off server as the yardstick
(A/A), in alternating windows. Triton's statistics split each difference into queue time (the
batcher's hand-off: the request waits for the batcher thread, then for the instance) and the step's
compute, and the A/A row says how far two identical servers differ in the same windows.

    .venv/bin/python -m benchmarks.investigations.batcher_cost [-r .tritonize/capacity_repository]
        [--scenario embed-mix] [--model all-minilm-l6-v2] [--pairs 16] [--seconds 2] [--out FILE]

Why: at 1 user both configs run the same executions (batches of 1), and a plan's windows there
measured on / off 0.80-0.99 with the A/A copy differing as much (0.83-1.18). Here the windows of the
three servers follow each other within seconds (the order rotates each round), the servers run on
core 0 and the client on core 1 (on two cores or more), and every figure is a median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from tritonize.planner.scenarios import Scenario
from tritonize.planner.sweep import measurement_order
from tritonize.planner.systems import TritonVariant, Variant
from tritonize.planner.triton_stats import snapshot, window

console = Console(width=140)
FIGURES = ("req/s", "client ms", "success us", "queue us", "compute us", "avg batch")


def measure_window(client, system: TritonVariant, texts: list[str], outputs: list[str], seconds: float) -> dict[str, float]:
    """One closed-loop user for `seconds`: its rate and mean latency, and Triton's per-request averages."""
    import tritonclient.grpc as grpc

    wanted = [grpc.InferRequestedOutput(o) for o in outputs]
    before = snapshot(system.server.http_url)
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        inp = grpc.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[texts[len(latencies) % len(texts)].encode()]], dtype=object))
        t = time.perf_counter()
        client.infer(system.model, [inp], outputs=wanted)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    seen = window(before, snapshot(system.server.http_url))
    step, pipeline = seen[system.engine], seen[system.model]
    return {"req/s": len(latencies) / elapsed, "client ms": float(np.mean(latencies)) * 1e3,
            "success us": pipeline["success_ms"] * 1e3, "queue us": step["queue_ms"] * 1e3,
            "compute us": step["compute_infer_ms"] * 1e3, "avg batch": step["avg_batch"]}


def rotating_windows(systems: list[TritonVariant], scenario: Scenario, rounds: int, seconds: float,
                     on_started: Callable[[], None] = lambda: None) -> list[list[dict[str, float]]]:
    """Start `systems`, then one closed-loop user in windows that rotate between them as a plan's systems
    do at one load level (`sweep.measurement_order`); per system, its windows. The servers run where they
    were pinned (core 0 here), this client on core 1 (two cores or more); `on_started` runs once every
    server is up. Every server is stopped on the way out."""
    import tritonclient.grpc as grpc

    texts = scenario.texts()
    try:
        for s in systems:
            s.start()
        on_started()
        if (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {1})
        clients = [grpc.InferenceServerClient(s.server.grpc_url) for s in systems]
        for c, s in zip(clients, systems):
            measure_window(c, s, texts, scenario.outputs, 1.0)  # warm: first calls, page faults
        windows: list[list[dict[str, float]]] = [[] for _ in systems]
        for _, i in measurement_order(len(systems), 1, rounds):
            windows[i].append(measure_window(clients[i], systems[i], texts, scenario.outputs, seconds))
        for c in clients:
            c.close()
    finally:
        for s in systems:
            s.stop()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return windows


def differences(windows: dict[str, list[dict]], system: str, base: str) -> dict[str, list[float]]:
    """Per figure, `system` minus `base` round by round (ratios for req/s)."""
    out = {}
    for f in FIGURES[:-1]:
        pairs = zip(windows[system], windows[base])
        out[f] = [a[f] / b[f] if f == "req/s" else a[f] - b[f] for a, b in pairs]
    return out


def report(windows: dict[str, list[dict]], on: str, off: str, copy: str) -> None:
    table = Table(title=f"1 user, closed loop: medians over {len(windows[off])} rounds (Triton's figures per request)")
    table.add_column("system")
    for f in FIGURES:
        table.add_column(f, justify="right")
    for name, rows in windows.items():
        digits = {"req/s": 1, "client ms": 2, "avg batch": 2}  # microseconds: whole
        table.add_row(name, *(f"{np.median([r[f] for r in rows]):.{digits.get(f, 0)}f}" for f in FIGURES))
    console.print(table)
    diff = Table(title="differences, round by round: median (quartiles)")
    diff.add_column("")
    for f in FIGURES[:-1]:
        diff.add_column(f if f != "req/s" else "req/s ratio", justify="right")
    for label, system in (("on - off", on), ("A/A copy - off", copy)):
        d = differences(windows, system, off)
        cells = []
        for f in FIGURES[:-1]:
            lo, mid, hi = np.percentile(d[f], [25, 50, 75])
            digits = 3 if f == "req/s" else 2 if f == "client ms" else 0
            cells.append(f"{mid:+.{digits}f} ({lo:+.{digits}f} .. {hi:+.{digits}f})" if f != "req/s" else f"{mid:.3f} ({lo:.3f} .. {hi:.3f})")
        diff.add_row(label, *cells)
    console.print(diff)
    queue = np.median(differences(windows, on, off)["queue us"])
    spread = np.percentile(np.abs(differences(windows, copy, off)["compute us"]), 50)
    console.print(f"the batcher's hand-off: {queue:+.0f} us of queue per request; two identical servers' compute "
                  f"differed by {spread:.0f} us per request (median |A/A|) in the same rounds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--repository", type=Path, default=Path(".tritonize/capacity_repository"))
    ap.add_argument("--scenario", default="embed-mix", help="a scenario name or file: its texts and outputs")
    ap.add_argument("--model", default=None, help="the pipeline (default: the scenario's)")
    ap.add_argument("--threads", type=int, default=1, help="engine threads, the same for every server")
    ap.add_argument("--pairs", type=int, default=16, help="rounds: each measures every server once")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per window")
    ap.add_argument("--out", type=Path, default=Path("bench_results/batcher_cost.json"))
    args = ap.parse_args()

    sc = Scenario.load(args.scenario)
    model = args.model or sc.model
    server_cpus = "0" if (os.cpu_count() or 1) >= 2 else None
    scratch = args.out.with_suffix("")
    on = TritonVariant(args.repository, model, Variant(max_queue_delay_us=0, threads=args.threads), scratch / "on", server_cpus)
    off = TritonVariant(args.repository, model, Variant(dynamic_batching=False, threads=args.threads), scratch / "off", server_cpus)
    copy = TritonVariant(args.repository, model, off.variant, scratch / "off-copy", server_cpus, copy_of=off.name)
    systems = [on, off, copy]
    windows = dict(zip((s.name for s in systems), rotating_windows(systems, sc, args.pairs, args.seconds)))
    report(windows, on.name, off.name, copy.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scenario": sc.name, "model": model, "threads": args.threads, "seconds": args.seconds,
                                    "pinning": "servers on core 0, client on core 1" if server_cpus else "none",
                                    "systems": {"on": on.name, "off": off.name, "copy": copy.name}, "windows": windows}, indent=2))
    console.print(f"raw figures: {args.out}")


if __name__ == "__main__":
    main()
