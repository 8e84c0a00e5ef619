"""Drive systems x load levels (concurrent users, or offered rates) with the same Locust scenario, in one
run, collect the points, and search each system's capacity between measured rates."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tritonize.planner import triton_stats
from tritonize.planner.capacity import PlanResults, Point, next_rate
from tritonize.planner.inputs import unique_slugs
from tritonize.planner.load import LoadResult, run_locust
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

    def avg(f: str) -> float | None:
        values = [getattr(w, f) for w in windows if getattr(w, f) is not None]
        return sum(values) / len(values) if values else None

    return Point(windows[0].system, windows[0].users, sum(w.rps for w in windows) / len(windows), mean("p50_ms"),
                 mean("p95_ms"), mean("p99_ms"), sum(w.requests for w in windows), sum(w.failures for w in windows),
                 avg("avg_batch"), windows[0].offered_rps, sum(w.scheduled for w in windows), sum(w.late for w in windows),
                 avg("queue_ms"), avg("compute_ms"), avg("padding"))


def padding_ratio(counters: dict) -> float | None:
    """Tokens computed / real tokens over a window (the tritonize_tokens_* counter deltas), summed over models."""
    real = sum(v for k, v in counters.items() if k.startswith("tritonize_tokens_real_total"))
    computed = sum(v for k, v in counters.items() if k.startswith("tritonize_tokens_computed_total"))
    return computed / real if real else None


def engine_step(r: LoadResult, engine: str | None) -> dict:
    """Triton's statistics of the model that runs the engine: the system's own, or (a server someone else
    started, `bench --url`) the one pipeline step named NAME_model, or the only model that served."""
    if engine is None:
        steps = [k for k in r.triton if k.endswith("_model")]
        engine = steps[0] if len(steps) == 1 else next(iter(r.triton)) if len(r.triton) == 1 else None
    return r.triton.get(engine or "") or {}


def point_of(r: LoadResult, engine: str | None) -> Point:
    step = engine_step(r, engine)
    return Point(r.system, r.users, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.requests, r.failures, step.get("avg_batch"),
                 r.offered_rps, r.scheduled, r.late, step.get("queue_ms"), step.get("compute_infer_ms"), padding_ratio(r.padding))


def level_name(point: Point) -> str:
    return f"{point.offered_rps:g} req/s offered" if point.offered_rps else f"{point.users} users"


def describe(p: Point, percentile: int = 95) -> str:
    """One plain line per measured level (what a log file gets when stdout is not a terminal)."""
    offered = f"offered {p.offered_rps:g}, " if p.offered_rps else ""
    late = f", {p.late} sends late" if p.late else ""
    batch = f", avg batch {p.avg_batch:.1f}" if p.avg_batch else ""
    return (f"{p.system}: {level_name(p)}: {offered}achieved {p.rps:.1f} req/s, p50 {p.p50_ms:.0f} ms, "
            f"p{percentile} {p.latency(percentile):.0f} ms, {p.failures} failures{late}{batch}")


WARM_UP_S = 2
console = Console(highlight=False)  # progress, and a plain line per level where stdout is not a terminal


class Levels:
    """Runs one level at a time on started systems, with live progress: Locust's current req/s, p95 and
    failures while a level runs (a rich line on a terminal), and a plain line per level otherwise."""

    def __init__(self, systems: list, hosts: list[str], scenarios: list[Path], seconds: float, out_dir: Path,
                 locust_cpus: str | None, processes: int, protocol: str | None, arrival: str, progress: Progress, task):
        self.systems, self.hosts, self.scenarios, self.seconds, self.out_dir = systems, hosts, scenarios, seconds, out_dir
        self.locust_cpus, self.processes, self.protocol, self.arrival = locust_cpus, processes, protocol, arrival
        self.progress, self.task = progress, task
        self.peak_rss: dict[str, float] = {}  # system -> peak RSS of its server's process group (MiB)
        self.slugs = slugs(systems)

    def warm(self, i: int, seconds: float = WARM_UP_S) -> None:
        """A short closed-loop run on a fresh server, discarded: the first requests of a server are slow
        (a first open-loop level of 30 req/s measured p95 130 ms, its next levels 14-27 ms)."""
        system = self.systems[i]
        self.progress.update(self.task, description=f"{system.name}: warming up")
        user = self.protocol if (self.protocol and system.user in ("grpc", "http")) else system.user
        run_locust(self.scenarios[i], self.hosts[i], user, 2, seconds, self.out_dir / "locust" / f"warmup_{self.slugs[i]}",
                   system.name, cpus=self.locust_cpus)

    def run(self, i: int, users: int, rate: float | None, suffix: str = "") -> tuple[LoadResult, Point]:
        system = self.systems[i]
        label = f"{rate:g} req/s" if rate else f"{users} users"
        http, metrics = system.stats_urls
        user = self.protocol if (self.protocol and system.user in ("grpc", "http")) else system.user
        host = http if (user == "http" and http) else self.hosts[i]
        name = f"{self.slugs[i]}_{f'rate{rate:g}' if rate else f'u{users}'}{suffix}"

        def show(now: dict | None) -> None:
            figures = (f" | now {now['rps']:.0f} req/s, p95 {now['p95_ms']:.0f} ms, {now['failures']} failures"
                       if now and now["requests"] else "")
            self.progress.update(self.task, description=f"{system.name}: {label}{figures}")

        show(None)
        server = getattr(system, "server", None)
        r = run_locust(self.scenarios[i], host, user, users, self.seconds, self.out_dir / "locust" / name, system.name,
                       processes=self.processes, cpus=self.locust_cpus, triton_http=http, triton_metrics=metrics,
                       progress=show, rate=rate, arrival=self.arrival,
                       server_pgid=server.process.pid if server is not None and getattr(server, "process", None) else None)
        if r.peak_server_rss_mib:
            self.peak_rss[system.name] = max(self.peak_rss.get(system.name, 0.0), r.peak_server_rss_mib)
        point = point_of(r, getattr(system, "engine", None))
        if not console.is_terminal:
            console.print(describe(point), soft_wrap=True)
        self.progress.advance(self.task)
        if http:  # what an overloaded level left queued must not load the next one (servers share cores)
            self.progress.update(self.task, description=f"{system.name}: waiting for its queue to drain")
            triton_stats.wait_idle(http)
        else:
            time.sleep(0.5)
        return r, point


def slugs(systems: list) -> list[str]:
    """File-name stems, one per system (unique, never cut into a collision)."""
    return unique_slugs([s.name for s in systems])


def sweep(systems: list[System], scenario: Scenario, users: list[int], seconds: float, out_dir: Path,
          locust_cpus: str | None = None, processes: int = 1, setup: dict | None = None,
          protocol: str | None = None, rounds: int = 1, rates: list[float] | None = None, arrival: str = "poisson",
          search: tuple[float, int, int] | None = None, searched: list[int] | None = None) -> PlanResults:
    """Every system is started first and stays up (an idle server costs no CPU: 0.2% of a core
    measured), then the levels run in `measurement_order`; one point per system and level (its rounds
    pooled), in the order of the first round. `runs` keeps every window (`round` says which).

    Levels are `users` (closed loop) or, given `rates`, offered rates (open loop, `arrival` gaps). With
    `search` = (slo_ms, percentile, extra levels) and rates, each system in `searched` (default: all)
    then gets up to that many more levels, searching for its capacity (`capacity.next_rate`: bisection
    between the highest passing and the lowest missing rate, or above the grid where none missed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = PlanResults(scenario=scenario.__dict__ | {"words": scenario.words.__dict__}, setup=dict(setup or {}))
    names = slugs(systems)
    # Same texts for every system; only the served pipeline's name may differ (fp32 vs int8).
    scenarios = [replace(scenario, model=getattr(s, "model", scenario.model)).save(out_dir / f"scenario_{slug}.json")
                 for s, slug in zip(systems, names)]
    grid: list[tuple[int, float | None]] = [(1, r) for r in rates] if rates else [(n, None) for n in users]
    extra = search[2] if (search and rates) else 0
    pick = list(range(len(systems))) if searched is None else searched
    with contextlib.ExitStack() as running, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} levels"),
                     TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("load", total=len(systems) * len(grid) * rounds + extra * len(pick))
        hosts = []
        for system in systems:
            progress.update(task, description=f"starting {system.name}")
            hosts.append(system.start())
            running.callback(system.stop)
        levels = Levels(systems, hosts, scenarios, seconds, out_dir, locust_cpus, processes, protocol, arrival, progress, task)
        if rates:  # an open-loop level's latency is the server's; its warm-up is not
            for i, system in enumerate(systems):
                if system.user in ("grpc", "http"):
                    levels.warm(i)
        windows: dict[tuple[int, int], list[Point]] = {}
        for k, (level, i) in enumerate(measurement_order(len(systems), len(grid), rounds)):
            n, rate = grid[level]
            round_ = k // (len(systems) * len(grid)) + 1
            r, point = levels.run(i, n, rate, f"_r{round_}" if rounds > 1 else "")
            windows.setdefault((level, i), []).append(point)
            results.runs.append({**r.to_dict(), "engine": getattr(systems[i], "engine", None), "round": round_})
        results.points = [pooled(w) for w in windows.values()]
        if search and rates:
            slo_ms, percentile, _ = search
            for i in pick:
                for _ in range(extra):
                    mine = [p for p in results.points if p.system == systems[i].name]
                    rate = next_rate(mine, slo_ms, percentile)
                    if rate is None:
                        break
                    rate = round(rate, 1)
                    r, point = levels.run(i, 1, rate, "_search")
                    results.points.append(point)
                    results.runs.append({**r.to_dict(), "engine": getattr(systems[i], "engine", None), "round": "search"})
        results.setup["peak server memory (MiB)"] = {k: round(v, 1) for k, v in levels.peak_rss.items()}
    return results


def confirm(system: System, scenario: Scenario, rate: float, seconds: float, out_dir: Path, slo_ms: float, percentile: int,
            locust_cpus: str | None = None, arrival: str = "poisson", steps: int = 3, step_down: float = 0.9) -> dict:
    """`plan --confirm`: the recommendation measured again, open loop, at its predicted rate on a fresh
    server. Where that misses (SLO, failures, or achieved < ACHIEVED x offered), up to `steps` more levels
    at `step_down` x the rate before, for the rate it does hold. Returns `recommendation.confirmed`:
    predicted_rps, rate_rps / achieved_rps / pN_ms / met of the first level, confirmed_rps (the highest
    offered rate that held; 0 if none), and every level's point."""
    results = PlanResults(scenario={}, setup={})
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as running, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} levels"),
                     TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"starting {system.name} (confirmation)", total=1 + steps)
        host = system.start()
        running.callback(system.stop)
        path = replace(scenario, model=getattr(system, "model", scenario.model)).save(out_dir / "scenario_confirm.json")
        levels = Levels([system], [host], [path], seconds, out_dir, locust_cpus, 1, None, arrival, progress, task)
        levels.warm(0)
        offered, points = rate, []
        for k in range(1 + steps):
            r, point = levels.run(0, 1, round(offered, 1), "_confirm")
            points.append(point)
            results.runs.append({**r.to_dict(), "engine": getattr(system, "engine", None), "round": "confirm"})
            if point.meets(slo_ms, percentile):
                break
            offered *= step_down
    first = points[0]
    held = [p.offered_rps or 0.0 for p in points if p.meets(slo_ms, percentile)]
    return {"system": system.name, "predicted_rps": rate, "rate_rps": first.offered_rps, "achieved_rps": round(first.rps, 2),
            f"p{percentile}_ms": first.latency(percentile), "failures": first.failures, "met": first.meets(slo_ms, percentile),
            "confirmed_rps": max(held) if held else 0.0, "levels": [asdict(p) for p in points], "runs": results.runs,
            "peak_memory_mib": levels.peak_rss.get(system.name)}
