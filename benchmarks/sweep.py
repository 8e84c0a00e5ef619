"""Drive systems x load levels with the same Locust scenario, in one run, and collect the points."""

from __future__ import annotations

import contextlib
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


def measurement_order(n_systems: int, n_levels: int) -> list[tuple[int, int]]:
    """(level, system) indices, level by level: every system is measured at a load level before any
    system moves to the next, and the system that goes first rotates. A shared VM's speed drifts by
    15-25% over minutes; measured this way, the systems at one level see the same machine, so their
    ratios hold even when the absolute rates move."""
    return [(level, (level + k) % n_systems) for level in range(n_levels) for k in range(n_systems)]


def sweep(systems: list[System], scenario: Scenario, users: list[int], seconds: float, out_dir: Path,
          locust_cpus: str | None = None, processes: int = 1, setup: dict | None = None,
          protocol: str | None = None) -> PlanResults:
    """Every system is started first and stays up (an idle server costs no CPU), then the levels run in
    `measurement_order`; the points come back in that order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = PlanResults(scenario=scenario.__dict__ | {"words": scenario.words.__dict__}, setup=dict(setup or {}))
    slugs = ["".join(c if c.isalnum() else "_" for c in s.name)[:60] for s in systems]
    # Same texts for every system; only the served pipeline's name may differ (fp32 vs int8).
    scenarios = [replace(scenario, model=getattr(s, "model", scenario.model)).save(out_dir / f"scenario_{slug}.json")
                 for s, slug in zip(systems, slugs)]
    with contextlib.ExitStack() as running, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} levels"),
                     TimeElapsedColumn()) as progress:
        task = progress.add_task("load", total=len(systems) * len(users))
        hosts = []
        for system in systems:
            progress.update(task, description=f"starting {system.name}")
            hosts.append(system.start())
            running.callback(system.stop)
        for level, i in measurement_order(len(systems), len(users)):
            system, n = systems[i], users[level]
            progress.update(task, description=f"{system.name}: {n} users")
            http, metrics = system.stats_urls
            user = protocol if (protocol and system.user in ("grpc", "http")) else system.user
            host = http if (user == "http" and http) else hosts[i]
            r = run_locust(scenarios[i], host, user, n, seconds, out_dir / "locust" / f"{slugs[i]}_u{n}", system.name,
                           processes=processes, cpus=locust_cpus, triton_http=http, triton_metrics=metrics,
                           progress=lambda: progress.refresh())
            step = r.triton.get(getattr(system, "engine", None) or "")
            results.points.append(Point(system.name, n, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.requests, r.failures,
                                        step["avg_batch"] if step else None))
            results.runs.append({**r.to_dict(), "engine": getattr(system, "engine", None)})
            progress.advance(task)
            time.sleep(0.5)  # let queues drain between levels
    return results
