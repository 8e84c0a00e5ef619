"""Transparent huge pages for the engine's weights (server/memory.py): with and without, side by side.

    .venv/bin/python -m benchmarks.investigations.huge_pages_bench [-r .tritonize/capacity_repository]
        [--scenario embed-mix] [--model all-minilm-l6-v2] [--rounds 12] [--pairs 8]

- Served: four servers of the pipeline (batching off, one thread, on core 0; the client on core 1), two
  with `ServerConfig.huge_pages` and two without, started alternately; one user in rotating windows;
  Triton's compute per request. Two servers per arm, because two identical servers differ by a few
  percent for their whole life (benchmarks/investigations/batcher_cost.py).
- In process: the engine's ONNX Runtime session in fresh processes, with and without the tunable,
  alternating (`--pairs`), at batch 1 x 16 tokens and batch 8 x 24 tokens.
Prints each arm's medians and the ratios huge / default (below 1: faster with huge pages), and the
huge pages each server's stubs hold (0 kB where the kernel's THP mode is `never`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from benchmarks.investigations.batcher_cost import rotating_windows
from tritonize.planner.scenarios import Scenario
from tritonize.planner.systems import TritonVariant, Variant
from tritonize.contract.model_config import engine_model
from tritonize.server.memory import with_huge_pages
from tritonize.server.stubs import stubs_of

console = Console(width=140)
SHAPES = ((1, 16), (8, 24))  # (batch, tokens) per in-process call

_ONE_PROCESS = """
import json, os, sys, time
import numpy as np
from pathlib import Path
from tritonize.runtime.encoders.engine_onnx import encoder_session
if len(os.sched_getaffinity(0)) > 1 and os.cpu_count() >= 2:
    os.sched_setaffinity(0, {0})
session = encoder_session(Path(sys.argv[1]), 1)
out = []
for batch, tokens in json.loads(sys.argv[2]):
    ids = np.random.RandomState(0).randint(1000, 2000, (batch, tokens)).astype(np.int64)
    feeds = {i.name: ids if i.name == "input_ids" else np.ones_like(ids) if i.name == "attention_mask" else np.zeros_like(ids)
             for i in session.get_inputs()}
    for _ in range(10):
        session.run(None, feeds)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < float(sys.argv[3]):
        t = time.perf_counter(); session.run(None, feeds); times.append(time.perf_counter() - t)
    out.append(float(np.median(times)) * 1e3)
print(json.dumps(out))
"""


def anon_huge_kb(pid: int) -> int:
    """AnonHugePages of a process (its transparent huge pages), kB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def in_process(onnx: Path, pairs: int, seconds: float) -> dict[str, list[list[float]]]:
    """Per arm, one list of p50s (ms, one per shape) per fresh process; the arms alternate."""
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    runs: dict[str, list[list[float]]] = {"default": [], "huge pages": []}
    for k in range(2 * pairs):
        arm = ("default", "huge pages")[(k + k // 2) % 2]  # default, huge, huge, default, ...: drift cancels
        env = with_huge_pages(base) if arm == "huge pages" else base
        done = subprocess.run([sys.executable, "-c", _ONE_PROCESS, str(onnx), json.dumps(SHAPES), str(seconds)],
                              env=env, capture_output=True, text=True, check=True)
        runs[arm].append(json.loads(done.stdout))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--repository", type=Path, default=Path(".tritonize/capacity_repository"))
    ap.add_argument("--scenario", default="embed-mix")
    ap.add_argument("--model", default=None, help="the pipeline (default: the scenario's)")
    ap.add_argument("--rounds", type=int, default=12, help="served: rotating rounds of one window per server")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per window (served) or per shape (in process)")
    ap.add_argument("--pairs", type=int, default=8, help="in process: pairs of fresh processes")
    ap.add_argument("--out", type=Path, default=Path("bench_results/huge_pages_bench.json"))
    args = ap.parse_args()

    sc = Scenario.load(args.scenario)
    model = args.model or sc.model
    engine = engine_model(args.repository, model)
    cpus = "0" if (os.cpu_count() or 1) >= 2 else None
    scratch = args.out.with_suffix("")
    arms = [("default", False), ("huge pages", True)] * 2  # started alternately
    systems = [TritonVariant(args.repository, model, Variant(dynamic_batching=False, threads=1), scratch / f"server-{k}", cpus,
                             huge_pages=huge) for k, (_, huge) in enumerate(arms)]
    held: list[int] = []  # per server, the huge pages its stubs hold once loaded (kB)
    windows = rotating_windows(systems, sc, args.rounds, args.seconds, on_started=lambda: held.extend(
        sum(anon_huge_kb(stub.pid) for stub in stubs_of(s.server.process.pid)) for s in systems))
    compute = [[w["compute us"] for w in mine] for mine in windows]

    for k, ((arm, _), kb) in enumerate(zip(arms, held)):
        console.print(f"served, server {k} ({arm}): compute per request median {np.median(compute[k]):.0f} us, "
                      f"stubs' huge pages {kb // 1024} MiB")
    per_round = [(compute[1][r] + compute[3][r]) / (compute[0][r] + compute[2][r]) for r in range(args.rounds)]
    q1, med, q3 = np.percentile(per_round, [25, 50, 75])
    console.print(f"served ({sc.name}, 1 user): compute per request, huge pages / default: median {med:.3f} (quartiles {q1:.3f}-{q3:.3f})")

    onnx = args.repository / engine / "1" / "model.onnx"
    runs = in_process(onnx, args.pairs, args.seconds)
    ratios = {}
    for s, (batch, tokens) in enumerate(SHAPES):
        pairs = [h[s] / d[s] for h, d in zip(runs["huge pages"], runs["default"])]
        ratios[f"batch {batch} x {tokens} tokens"] = pairs
        console.print(f"in process, batch {batch} x {tokens} tokens: p50 default {np.median([r[s] for r in runs['default']]):.2f} ms, "
                      f"huge pages {np.median([r[s] for r in runs['huge pages']]):.2f} ms; huge pages / default per pair: median "
                      f"{np.median(pairs):.3f} (min {min(pairs):.3f}, max {max(pairs):.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scenario": sc.name, "model": model, "served": {
        "arms": [a for a, _ in arms], "compute_us": compute, "stub_huge_kb": held, "huge_over_default_per_round": per_round},
        "in_process": {"shapes": SHAPES, "p50_ms": runs, "huge_over_default_per_pair": ratios}}, indent=2))
    console.print(f"raw figures: {args.out}")


if __name__ == "__main__":
    main()
