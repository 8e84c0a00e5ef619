"""Drive systems x load levels with the same Locust scenario, in one run, and collect the points."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tritonize.benchmarks.load import run_locust
from tritonize.benchmarks.planner import PlanResults, Point
from tritonize.benchmarks.scenarios import Scenario


class System(Protocol):
    name: str
    user: str  # grpc | http | fastapi | openai: the Locust user class that calls it

    def start(self) -> str: ...  # returns the host Locust calls
    def stop(self) -> None: ...
    @property
    def stats_urls(self) -> tuple[str | None, str | None]: ...  # Triton HTTP and metrics, if served


def sweep(systems: list[System], scenario: Scenario, users: list[int], seconds: float, out_dir: Path,
          locust_cpus: str | None = None, processes: int = 1, setup: dict | None = None,
          protocol: str | None = None) -> PlanResults:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = PlanResults(scenario=scenario.__dict__ | {"words": scenario.words.__dict__}, setup=dict(setup or {}))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} levels"),
                  TimeElapsedColumn()) as progress:
        task = progress.add_task("load", total=len(systems) * len(users))
        for system in systems:
            slug = "".join(c if c.isalnum() else "_" for c in system.name)[:60]
            # Same texts for every system; only the served pipeline's name may differ (fp32 vs int8).
            scenario_path = replace(scenario, model=getattr(system, "model", scenario.model)).save(out_dir / f"scenario_{slug}.json")
            progress.update(task, description=f"starting {system.name}")
            host = system.start()
            try:
                for n in users:
                    progress.update(task, description=f"{system.name}: {n} users")
                    http, metrics = system.stats_urls
                    user = protocol if (protocol and system.user in ("grpc", "http")) else system.user
                    if user == "http" and http:
                        host = http
                    r = run_locust(scenario_path, host, user, n, seconds, out_dir / "locust" / f"{slug}_u{n}", system.name,
                                   processes=processes, cpus=locust_cpus, triton_http=http, triton_metrics=metrics,
                                   progress=lambda: progress.refresh())
                    step = r.triton.get(getattr(system, "engine", None) or "")
                    results.points.append(Point(system.name, n, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.requests, r.failures,
                                                step["avg_batch"] if step else None))
                    results.runs.append({**r.to_dict(), "engine": getattr(system, "engine", None)})
                    progress.advance(task)
                    time.sleep(0.5)  # let queues drain between levels
            finally:
                system.stop()
    return results
