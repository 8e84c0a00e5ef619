"""Run Locust headless for a bounded time and read back its CSV stats (plus Triton's view).

Rates and percentiles come from Locust's own stats window (its aggregate `Requests/s` is requests over
the time from the start of the test to the last request), never from the nominal `seconds`. Every run
ends by itself: Locust (its master and `--processes` workers) runs in its own session, writes its output
to a file (never a pipe read after the wait), and the whole process group is killed once the run ends
or its deadline passes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tritonize.planner import triton_stats

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CLASSES = {"grpc": "GrpcLoad", "http": "HttpLoad", "fastapi": "FastApiLoad", "openai": "OpenAILoad"}  # locustfile.py
OPEN_LOOP_USERS = ("grpc", "http")
ARRIVALS = ("poisson", "constant")
GRACE_S = 30  # a run is killed (as a process group) this long after its duration


@dataclass
class LoadResult:
    system: str
    users: int
    seconds: float
    requests: int
    failures: int
    rps: float  # successful requests per second, over Locust's stats window (= achieved rate)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    csv_prefix: str
    html: str
    triton: dict = field(default_factory=dict)  # per model: queue/compute ms, avg batch, failures, histogram
    padding: dict = field(default_factory=dict)  # tritonize_* counter deltas
    window_s: float = 0.0  # Locust's stats window: requests / its Requests/s
    avg_ms: float = 0.0
    offered_rps: float | None = None  # open loop: the rate offered; None for closed-loop users
    arrival: str | None = None
    scheduled: int = 0  # open loop: sends scheduled (all processes)
    late: int = 0  # open loop: sends that left more than 10 ms behind schedule (the sender fell behind)
    max_lag_ms: float = 0.0
    peak_server_rss_mib: float | None = None  # the server's process group, sampled during the level
    pgid: int = 0  # Locust's process group (every process of the run; none is left when this returns)

    @property
    def in_flight(self) -> float:
        """Mean requests in flight (Little's law over Locust's window: rate x mean latency)."""
        return (self.requests / self.window_s) * self.avg_ms / 1e3 if self.window_s else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "in_flight": self.in_flight}


def locust_command(host: str, user: str, users: int, seconds: float, prefix: Path, processes: int, cpus: str | None,
                   scenario: Path | None = None, rate: float | None = None, arrival: str = "poisson",
                   triton_http: str | None = None) -> list[str]:
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), CLASSES[user], "--headless", "--host", host,
        "-u", str(users), "-r", str(max(users, 1)), "-t", f"{max(int(round(seconds)), 1)}s",
        # the users' last requests may finish (open loop: every request already sent), then they are killed
        "--stop-timeout", "5",
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary", "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]
    if scenario is not None:
        cmd += ["--scenario", str(scenario)]
    if rate:
        cmd += ["--rate", f"{rate:g}", "--arrival", arrival]
    if triton_http:
        cmd += ["--triton-http", triton_http]
    if processes > 1:
        cmd += ["--processes", str(processes)]  # one master + N workers on this machine
    return (["taskset", "-c", cpus] if cpus else []) + cmd


def read_aggregate(prefix: Path) -> dict[str, str]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return next(r for r in rows if r["Name"] == "Aggregated")


def live(prefix: Path) -> dict | None:
    """The newest Aggregated row of Locust's stats history (written every second during a run):
    current req/s, p95 and failures so far; None before the first row."""
    try:
        with open(f"{prefix}_stats_history.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except OSError:
        return None
    if not rows:
        return None
    r = rows[-1]
    num = lambda k: float(r[k]) if r.get(k) not in (None, "", "N/A") else float("nan")  # noqa: E731
    return {"rps": num("Requests/s") - num("Failures/s"), "p95_ms": num("95%"), "requests": int(num("Total Request Count")),
            "failures": int(num("Total Failure Count"))}


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in a process group (a server and its Python-backend stubs), MiB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: pgrp
                with open(f"/proc/{entry}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return total / 1024


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


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
    progress: Callable[[dict | None], None] | None = None,
    rate: float | None = None,
    arrival: str = "poisson",
    server_pgid: int | None = None,
) -> LoadResult:
    """One load level. `user`: grpc | http | fastapi | openai. Closed loop: `users` concurrent users;
    open loop (`rate` req/s, grpc/http only): one sending user per Locust process. Triton's statistics
    bracket the run when given; `progress` gets Locust's live figures about twice a second;
    `server_pgid`: the server's process group, whose peak memory is sampled."""
    if user not in CLASSES:
        raise ValueError(f"user must be one of {', '.join(CLASSES)}, not {user!r}")
    if rate:
        if user not in OPEN_LOOP_USERS:
            raise ValueError(f"an offered rate (open loop) needs a Triton gRPC or HTTP user, not {user!r}")
        if arrival not in ARRIVALS:
            raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, not {arrival!r}")
        users = max(processes, 1)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_prefix.parent.glob(f"{out_prefix.name}_*"):
        stale.unlink()
    before = triton_stats.snapshot(triton_http) if triton_http else {}
    counters0 = triton_stats.metrics(triton_metrics) if triton_metrics else {}
    cmd = locust_command(host, user, users, seconds, out_prefix, processes, cpus, scenario_path, rate, arrival)
    log = Path(f"{out_prefix}.log")
    peak = 0.0
    with open(log, "w") as output:  # a file, never a pipe: nothing blocks on a process that outlives the run
        proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    pgid = proc.pid  # its own session: the master, its workers and anything they start
    deadline = time.monotonic() + seconds + GRACE_S
    killed = False
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                killed = True
                break
            if server_pgid:
                peak = max(peak, group_rss_mib(server_pgid))
            if progress:
                progress(live(out_prefix))
            time.sleep(0.5)
    finally:
        _kill_group(pgid)  # whatever is left of the run (a worker whose master exited), also on Ctrl-C
        proc.wait()
    output_text = log.read_text(errors="replace")
    stats = Path(f"{out_prefix}_stats.csv")
    if killed and not Path(f"{out_prefix}.html").exists():
        # Locust writes the HTML report when the run has ended, before it shuts down; a run killed after
        # that lost nothing (its stats CSV holds the whole run).
        raise RuntimeError(f"locust did not exit within {seconds + GRACE_S:.0f} s; its process group was killed\n{output_text[-3000:]}")
    if (proc.returncode != 0 and not killed) or not stats.exists():
        raise RuntimeError(f"locust failed (exit {proc.returncode}):\n{output_text[-3000:]}")
    after = triton_stats.snapshot(triton_http) if triton_http else {}
    counters1 = triton_stats.metrics(triton_metrics) if triton_metrics else {}
    agg = read_aggregate(out_prefix)
    requests, failures = int(agg["Request Count"]), int(agg["Failure Count"])
    pct = lambda k: float(agg[k]) if agg[k] not in ("N/A", "") else float("nan")  # noqa: E731
    total_rps, fail_rps = pct("Requests/s"), pct("Failures/s")
    window_s = requests / total_rps if requests and total_rps > 0 else 0.0
    open_loop = json.loads(Path(f"{out_prefix}_open_loop.json").read_text()) if Path(f"{out_prefix}_open_loop.json").exists() else {}
    triton = triton_stats.window(before, after) if triton_http else {}
    if triton:
        triton_stats.write(triton, out_prefix)
    return LoadResult(
        system=system, users=users, seconds=seconds, requests=requests, failures=failures,
        rps=(total_rps - fail_rps) if math.isfinite(total_rps) else 0.0,
        p50_ms=pct("50%"), p95_ms=pct("95%"), p99_ms=pct("99%"),
        csv_prefix=str(out_prefix), html=f"{out_prefix}.html",
        triton=triton, padding={k: counters1[k] - counters0.get(k, 0) for k in counters1},
        window_s=window_s, avg_ms=pct("Average Response Time") if requests else 0.0,
        offered_rps=rate or None, arrival=arrival if rate else None,
        scheduled=int(open_loop.get("scheduled", 0)), late=int(open_loop.get("late", 0)),
        max_lag_ms=float(open_loop.get("max_lag_ms", 0.0)), peak_server_rss_mib=peak or None, pgid=pgid,
    )
