"""Drive systems x load levels with the same Locust scenario, in one run, and collect the points."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tritonize.planner.load import run_locust
from tritonize.planner.capacity import PlanResults, Point
from tritonize.planner.inputs import unique_slugs
from tritonize.planner.scenarios import Scenario


class System(Protocol):
    name: str
    user: str  # grpc | http | fastapi | openai: the Locust user class that calls it

    def start(self) -> str: ...  # returns the host Locust calls
    def stop(self) -> None: ...
    @property
    def stats_urls(self) -> tuple[str | None, str | None]: ...  # Triton HTTP and metrics, if served


def measurement_order(n_systems: int, n_levels: int, rounds: int = 1) -> list[tuple[int, int]]:
    """(level, system) indices, level by level: every system is measured at a load level before any
    system moves to the next, and the system that goes first rotates. A shared VM's speed drifts by
    15-25% over minutes; measured this way, the systems at one level see the same machine, so their
    ratios hold even when the absolute rates move. Each further round walks the levels the other way
    and the systems in the reverse cycle, so a level's windows fall in different stretches of the run
    and a system follows a different one (in one run, the config measured right after the FastAPI
    baseline in both rounds was 20% slower at the same batch size than the one measured after int8)."""
    order = []
    for r in range(rounds):
        levels = range(n_levels) if r % 2 == 0 else reversed(range(n_levels))
        step = 1 if r % 2 == 0 else -1
        order += [(level, (level + r + step * k) % n_systems) for level in levels for k in range(n_systems)]
    return order


def pooled(windows: list[Point]) -> Point:
    """One point from a level's windows (rounds): mean rate; latency percentiles averaged, weighted by
    requests (Locust keeps percentiles, not the histograms to merge); requests and failures summed."""
    if len(windows) == 1:
        return windows[0]
    weights = [max(w.requests, 1) for w in windows]
    mean = lambda f: sum(getattr(w, f) * n for w, n in zip(windows, weights)) / sum(weights)  # noqa: E731
    batches = [w.avg_batch for w in windows if w.avg_batch is not None]
    return Point(windows[0].system, windows[0].users, sum(w.rps for w in windows) / len(windows), mean("p50_ms"),
                 mean("p95_ms"), mean("p99_ms"), sum(w.requests for w in windows), sum(w.failures for w in windows),
                 sum(batches) / len(batches) if batches else None)


def sweep(systems: list[System], scenario: Scenario, users: list[int], seconds: float, out_dir: Path,
          locust_cpus: str | None = None, processes: int = 1, setup: dict | None = None,
          protocol: str | None = None, rounds: int = 1) -> PlanResults:
    """Every system is started first and stays up (an idle server costs no CPU: 0.2% of a core
    measured), then the levels run in `measurement_order`; one point per system and level (its rounds
    pooled), in the order of the first round. `runs` keeps every window (`round` says which)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = PlanResults(scenario=scenario.__dict__ | {"words": scenario.words.__dict__}, setup=dict(setup or {}))
    slugs = unique_slugs([s.name for s in systems])  # file names: whole, readable, one per system
    # Same texts for every system; only the served pipeline's name may differ (fp32 vs int8).
    scenarios = [replace(scenario, model=getattr(s, "model", scenario.model)).save(out_dir / f"scenario_{slug}.json")
                 for s, slug in zip(systems, slugs)]
    with contextlib.ExitStack() as running, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} levels"),
                     TimeElapsedColumn()) as progress:
        task = progress.add_task("load", total=len(systems) * len(users) * rounds)
        hosts = []
        for system in systems:
            progress.update(task, description=f"starting {system.name}")
            hosts.append(system.start())
            running.callback(system.stop)
        windows: dict[tuple[int, int], list[Point]] = {}
        for k, (level, i) in enumerate(measurement_order(len(systems), len(users), rounds)):
            system, n, round_ = systems[i], users[level], k // (len(systems) * len(users)) + 1
            suffix = f"_r{round_}" if rounds > 1 else ""
            progress.update(task, description=f"{system.name}: {n} users")
            http, metrics = system.stats_urls
            user = protocol if (protocol and system.user in ("grpc", "http")) else system.user
            host = http if (user == "http" and http) else hosts[i]
            r = run_locust(scenarios[i], host, user, n, seconds, out_dir / "locust" / f"{slugs[i]}_u{n}{suffix}", system.name,
                           processes=processes, cpus=locust_cpus, triton_http=http, triton_metrics=metrics,
                           progress=lambda: progress.refresh())
            step = r.triton.get(getattr(system, "engine", None) or "")
            windows.setdefault((level, i), []).append(Point(system.name, n, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.requests,
                                                           r.failures, step["avg_batch"] if step else None))
            results.runs.append({**r.to_dict(), "engine": getattr(system, "engine", None), "round": round_})
            progress.advance(task)
            time.sleep(0.5)  # let queues drain between levels
    results.points = [pooled(w) for w in windows.values()]
    return results
