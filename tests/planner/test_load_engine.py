"""The load engine: runs that end by themselves, rates from Locust's own window, open-loop sends,
and a user's own locustfile built from the project's users."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonize.planner.load import group_alive, run_locust
from tritonize.planner.scenarios import Scenario, WordCounts
from tests.conftest import EMBEDDER


def scenario(tmp_path: Path, **kw) -> Path:
    sc = Scenario(name="test", pipeline="embed", model=kw.pop("model", EMBEDDER),
                  words=WordCounts(median=8, sigma=0.5, min=2, max=32), pool_size=200, **kw)
    return sc.save(tmp_path / "scenario.json")


def aggregate(prefix) -> dict:
    with open(f"{prefix}_stats.csv") as f:
        return next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (a Locust master's, and its forked workers')."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read() and int(pid) != os.getpid():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def bench(server, tmp_path: Path, out: Path, *extra: str):
    from tritonize.cli import app

    return CliRunner().invoke(app, ["bench", "--scenario", str(scenario(tmp_path)), "--url", server.grpc_url,
                                    "--http-url", server.http_url, "--out", str(out), *extra])


def test_bench_rate_is_locusts_own(server, tmp_path):
    """bench's req/s is Locust's for the same run (its stats window, not the nominal --seconds), within 2%."""
    out = tmp_path / "b"
    result = bench(server, tmp_path, out, "--users", "2", "--seconds", "3")
    assert result.exit_code == 0, result.output
    run = json.loads((out / "results.json").read_text())["runs"][0]
    row = aggregate(run["csv_prefix"])
    locust_rps = float(row["Requests/s"]) - float(row["Failure Count"]) / run["window_s"]
    assert run["failures"] == 0 and run["rps"] == pytest.approx(locust_rps, rel=0.02)
    assert 0 < run["window_s"] < 3 + 5  # Locust's window: the run, and at most its stop timeout
    point = json.loads((out / "results.json").read_text())["points"][0]
    assert point["avg_batch"] >= 1 and point["queue_ms"] >= 0 and point["compute_ms"] > 0  # Triton's view, also with --url
    # not a terminal: a plain line per level (Locust's figures), and the table keeps every column
    assert "2 users: achieved" in " ".join(result.output.split()) and "avg batch" in result.output


def test_twenty_bench_runs_with_two_processes_each_end_and_leave_nothing(server, tmp_path):
    """`bench --processes 2` (a master and two workers) 20 times against one server: every run ends
    within its duration + 30 s, and no process of any run is left (its process group is empty and no
    process names its output folder)."""
    seconds = 2
    for k in range(20):
        out = tmp_path / f"run{k}"
        start = time.monotonic()
        result = bench(server, tmp_path, out, "--users", "2", "--seconds", str(seconds), "--processes", "2")
        took = time.monotonic() - start
        assert result.exit_code == 0, result.output
        assert took < seconds + 30, f"run {k} took {took:.0f} s"
        run = json.loads((out / "results.json").read_text())["runs"][0]
        assert run["requests"] > 0 and run["pgid"] > 0
        assert not group_alive(run["pgid"]), f"run {k}: Locust's process group is still alive"
        assert processes_mentioning(str(out)) == [], f"run {k}: a Locust process outlived it"


def test_open_loop_sends_on_schedule_and_reports_offered_and_achieved(server, tmp_path):
    r = run_locust(scenario(tmp_path), server.grpc_url, "grpc", 1, 3, tmp_path / "open", "triton",
                   rate=20, arrival="constant", triton_http=server.http_url)
    assert r.offered_rps == 20 and r.arrival == "constant" and r.failures == 0
    assert 50 <= r.scheduled <= 62 and r.requests == r.scheduled  # 20/s for 3 s, every request sent came back
    assert 0.75 * 20 <= r.rps <= 1.15 * 20  # a rate the server keeps up with: achieved ~ offered
    assert r.triton[f"{EMBEDDER}_model"]["inferences"] >= r.requests - 2
    assert Path(f"{r.csv_prefix}_triton.csv").read_text().startswith("model,inferences")


def test_open_loop_over_two_processes_offers_the_total_rate(server, tmp_path):
    """With --processes 2 each worker's sender offers half the rate; the master sums their sends."""
    r = run_locust(scenario(tmp_path), server.grpc_url, "grpc", 1, 3, tmp_path / "two", "triton", rate=40, processes=2)
    assert r.users == 2 and r.failures == 0
    assert 90 <= r.scheduled <= 135 and r.requests == r.scheduled  # 40/s for 3 s in all, every sent request back


def test_open_loop_is_refused_for_closed_loop_only_users(tmp_path):
    with pytest.raises(ValueError, match="Triton gRPC or HTTP user, not 'fastapi'"):
        run_locust(scenario(tmp_path), "http://x", "fastapi", 1, 1, tmp_path / "x", "s", rate=10)
    with pytest.raises(ValueError, match="arrival must be one of poisson, constant, not 'burst'"):
        run_locust(scenario(tmp_path), "x:1", "grpc", 1, 1, tmp_path / "x", "s", rate=10, arrival="burst")


def readme_recipe() -> str:
    """The README's own-locustfile example (the python block that imports the project's users)."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```python\n")[1:]]
    return next(b for b in blocks if "locust_users import" in b)


def test_own_locustfile_recipe_runs_with_users_in_flight_together(server, tmp_path):
    """The README's recipe, run as documented (`locust -f`, no environment variable): 4 users
    keep ~4 requests in flight (Little's law over Locust's own figures: rate x mean latency), and
    Triton's statistics land beside Locust's CSV."""
    recipe = readme_recipe()
    assert '"embed-mix"' in recipe and '"localhost:8000"' in recipe
    path = tmp_path / "my_locustfile.py"  # the test's small scenario and server in place of the README's
    path.write_text(recipe.replace('"embed-mix"', f'"{scenario(tmp_path)}"').replace('"localhost:8000"', f'"{server.http_url}"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITONIZE")}
    prefix = tmp_path / "mine"
    subprocess.run([sys.executable, "-m", "locust", "-f", str(path), "--headless", "-u", "4", "-r", "4", "-t", "4s",
                    "--host", server.grpc_url, "--csv", str(prefix), "--only-summary"], env=env, cwd=tmp_path,
                   capture_output=True, timeout=60, check=True)
    row = aggregate(prefix)
    assert int(row["Request Count"]) > 20 and int(row["Failure Count"]) == 0
    in_flight = float(row["Requests/s"]) * float(row["Average Response Time"]) / 1e3
    assert in_flight >= 0.8 * 4, in_flight
    with open(f"{prefix}_triton.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert int(rows[f"{EMBEDDER}_model"]["inferences"]) >= int(row["Request Count"]) - 4
    assert float(rows[f"{EMBEDDER}_model"]["avg_batch"]) >= 1


def test_own_locustfile_without_a_scenario_says_how_to_set_one(server, tmp_path):
    path = tmp_path / "bare.py"
    path.write_text("from tritonize.planner.locust_users import TritonGrpcUser\n\nclass Embed(TritonGrpcUser):\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "locust", "-f", str(path), "--headless", "-u", "1", "-r", "1", "-t", "2s",
                           "--host", server.grpc_url], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "no scenario; set `scenario = " in done.stderr + done.stdout


def test_open_loop_latency_counts_from_the_schedule_under_overload(server, tmp_path):
    """Offered more than the server serves, the open loop keeps sending: achieved falls short of offered
    and the queue shows in the latency (counted from each scheduled send), where a closed loop of one
    user only ever sees the service time. (Last in this file: the server then drains its backlog.)"""
    closed = run_locust(scenario(tmp_path), server.grpc_url, "grpc", 1, 2, tmp_path / "closed", "triton")
    rate = max(4 * closed.rps, 100)  # well past what one user gets through, at most a few hundred queued
    over = run_locust(scenario(tmp_path), server.grpc_url, "grpc", 1, 2, tmp_path / "over", "triton", rate=rate,
                      triton_http=server.http_url)
    assert over.offered_rps == rate and over.scheduled > 0.7 * rate * 2
    assert over.rps < 0.9 * rate, (over.rps, rate)  # achieved < offered (the sent requests drain after the level)
    assert over.p50_ms > 3 * closed.p50_ms, (over.p50_ms, closed.p50_ms)
    drained(server)
    assert server.is_ready()


def drained(server, timeout_s: float = 120) -> None:
    """Wait until Triton has finished every queued request (its statistics stop moving)."""
    from tritonize.planner.triton_stats import snapshot

    last, deadline = None, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = {k: v.get("inference_count") for k, v in snapshot(server.http_url).items()}
        if now == last:
            return
        last = now
        time.sleep(1)
