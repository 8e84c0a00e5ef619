"""Run Locust headless for a bounded time and read back its CSV stats (plus Triton's view)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonize.planner import triton_stats
from tritonize.planner.scenarios import SCENARIO_ENV

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass
class LoadResult:
    system: str
    users: int
    seconds: float
    requests: int
    failures: int
    rps: float  # successful requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    csv_prefix: str
    html: str
    triton: dict = field(default_factory=dict)  # per model: queue/compute ms, avg batch, failures, histogram
    padding: dict = field(default_factory=dict)  # tritonize_* counter deltas

    def to_dict(self) -> dict:
        return asdict(self)


def locust_command(host: str, user: str, users: int, seconds: float, prefix: Path, processes: int, cpus: str | None) -> list[str]:
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "-u", str(users), "-r", str(max(users, 1)), "-t", f"{int(seconds)}s", "--stop-timeout", "5",
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary", "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]
    if processes > 1:
        cmd += ["--processes", str(processes)]  # one master + N workers on this machine
    return (["taskset", "-c", cpus] if cpus else []) + cmd


def read_aggregate(prefix: Path) -> dict[str, str]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return next(r for r in rows if r["Name"] == "Aggregated")


def run_locust(
    scenario_path: Path,
    host: str,
    user: str,
    users: int,
    seconds: float,
    out_prefix: Path,
    system: str,
    processes: int = 1,
    cpus: str | None = None,
    triton_http: str | None = None,
    triton_metrics: str | None = None,
    progress=None,
) -> LoadResult:
    """One load level. `user`: grpc | http | fastapi. Triton's statistics bracket the window when given."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, SCENARIO_ENV: str(scenario_path), "TRITONIZE_USER": user}
    before = triton_stats.snapshot(triton_http) if triton_http else {}
    counters0 = triton_stats.metrics(triton_metrics) if triton_metrics else {}
    cmd = locust_command(host, user, users, seconds, out_prefix, processes, cpus)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + seconds + 30  # every load run ends by itself
    while proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            # Locust writes the HTML report when the run has ended, before it shuts down; with streamed
            # gRPC users its shutdown intermittently hangs (about 1 run in 4 of the streaming test, seen
            # here). Its stats CSV, rewritten every second during the run, then holds the whole run.
            if not Path(f"{out_prefix}.html").exists():
                raise RuntimeError(f"locust did not exit within {seconds + 30:.0f} s; killed")
            break
        if progress:
            progress()
        time.sleep(0.5)
    stderr = proc.stderr.read()
    if proc.returncode not in (0, -signal.SIGKILL) or not Path(f"{out_prefix}_stats.csv").exists():
        raise RuntimeError(f"locust failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    after = triton_stats.snapshot(triton_http) if triton_http else {}
    counters1 = triton_stats.metrics(triton_metrics) if triton_metrics else {}
    agg = read_aggregate(out_prefix)
    requests, failures = int(agg["Request Count"]), int(agg["Failure Count"])
    pct = lambda k: float(agg[k]) if agg[k] not in ("N/A", "") else float("nan")  # noqa: E731
    return LoadResult(
        system=system, users=users, seconds=seconds, requests=requests, failures=failures,
        rps=(requests - failures) / seconds, p50_ms=pct("50%"), p95_ms=pct("95%"), p99_ms=pct("99%"),
        csv_prefix=str(out_prefix), html=f"{out_prefix}.html",
        triton=triton_stats.window(before, after) if triton_http else {},
        padding={k: counters1[k] - counters0.get(k, 0) for k in counters1},
    )
