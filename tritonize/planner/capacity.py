"""Capacity planning from measurements: the highest throughput each configuration sustains under a
latency SLO, the configuration to choose, and the replicas a target request rate needs.

Everything here works on saved points (JSON), so a plan can be re-derived without re-running load.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass
class Point:
    """One load level of one system: what Locust measured (and Triton's average batch, if served)."""

    system: str
    users: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int = 0
    failures: int = 0
    avg_batch: float | None = None
    offered_rps: float | None = None  # open loop: the rate offered (None: closed loop, `users` users)
    scheduled: int = 0  # open loop: sends scheduled in the level
    late: int = 0  # open loop: sends that left more than 10 ms late (the load generator fell behind)
    queue_ms: float | None = None  # Triton's statistics, the engine step: mean queue and compute per request
    compute_ms: float | None = None
    padding: float | None = None  # tokens computed / real tokens (tritonize_* counters), where reported

    def latency(self, percentile: int) -> float:
        return getattr(self, f"p{percentile}_ms")

    @property
    def completed(self) -> float | None:
        """Open loop: the share of scheduled sends that succeeded within the level (achieved / offered)."""
        return (self.requests - self.failures) / self.scheduled if self.scheduled else None

    def meets(self, slo_ms: float, percentile: int) -> bool:
        """Within the SLO, no failures, and (open loop) achieved >= ACHIEVED x offered."""
        ok = self.latency(percentile) <= slo_ms and self.failures == 0
        if self.offered_rps:
            ok = ok and (self.completed or 0.0) >= ACHIEVED
        return ok


ACHIEVED = 0.98  # an open-loop level keeps up when this share of its scheduled sends succeeded


def rate_capacity(points: list[Point], slo_ms: float, percentile: int = 95) -> tuple[float, bool]:
    """Open loop: (the highest offered rate that meets the SLO below the lowest offered rate that
    misses it, whether any rate missed). A level that passes above a miss is noise, not capacity. With
    no miss the capacity is a lower bound ("at least X req/s, SLO not reached")."""
    pts = sorted((p for p in points if p.offered_rps), key=lambda p: p.offered_rps or 0)
    misses = [p.offered_rps or 0 for p in pts if not p.meets(slo_ms, percentile)]
    ceiling = min(misses) if misses else float("inf")
    passing = [p.offered_rps or 0 for p in pts if p.meets(slo_ms, percentile) and (p.offered_rps or 0) < ceiling]
    return (max(passing) if passing else 0.0), bool(misses)


def next_rate(points: list[Point], slo_ms: float, percentile: int, resolution: float = 0.05, grow: float = 1.5) -> float | None:
    """The next offered rate to measure in the search for capacity: half-way between the highest rate
    that passed and the lowest that missed; above the highest rate if none missed; half the lowest if
    none passed. None once the gap is within `resolution` of the missing rate."""
    capacity, missed = rate_capacity(points, slo_ms, percentile)
    rates = [p.offered_rps or 0 for p in points if p.offered_rps]
    if not rates:
        return None
    if not missed:
        return max(rates) * grow
    low = min(p.offered_rps or 0 for p in points if p.offered_rps and not p.meets(slo_ms, percentile))
    if capacity == 0:
        return low / 2 if low / 2 >= 1 else None
    if (low - capacity) <= resolution * low:
        return None
    return (capacity + low) / 2


def monotone(values: list[float]) -> list[float]:
    """The least-squares non-decreasing fit of `values` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count] of pooled runs
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [total / count for total, count in blocks for _ in range(int(count))]


def max_throughput_under_slo(points: list[Point], slo_ms: float, percentile: int = 95) -> float:
    """Highest request rate whose latency percentile stays within the SLO.

    Points are walked in order of offered load (users), up to the first level that breaks the SLO;
    later levels are ignored (a later 'pass' under overload is noise, not capacity). A closed-loop
    system's throughput does not fall as users are added, so the rates are read off their
    non-decreasing fit: a lucky window pooled with the slower levels after it, rather than the
    maximum of noisy windows, which overstated capacity by 17-30% against a confirmation run. At the
    breach, the rate is interpolated linearly between it and the last level that met the SLO.
    Levels with failures never count as meeting the SLO.
    """
    def meets(p: Point) -> bool:
        return p.latency(percentile) <= slo_ms and p.failures == 0

    walked: list[Point] = []
    for p in sorted(points, key=lambda p: p.users):
        walked.append(p)
        if not meets(p):
            break
    best, last_ok = 0.0, None  # last_ok: (fitted rate, latency) of the last level within the SLO
    for p, rate in zip(walked, monotone([p.rps for p in walked])):
        lat = p.latency(percentile)
        if meets(p):
            best, last_ok = rate, (rate, lat)
        elif last_ok is not None and rate > last_ok[0] and lat > last_ok[1]:
            best = last_ok[0] + (slo_ms - last_ok[1]) / (lat - last_ok[1]) * (rate - last_ok[0])
    return best


@dataclass
class Recommendation:
    slo_ms: float
    percentile: int
    target_rps: float
    headroom: float
    capacity: dict[str, float]  # system -> max rps under the SLO
    system: str | None
    max_rps: float
    replicas: int | None
    note: str = ""
    slo_reached: dict[str, bool] = field(default_factory=dict)  # open loop: whether a measured rate missed the SLO
    replica: dict | None = None  # what one replica is: cores, cpus, ort_threads, instances, device, memory_mib
    repository: str | None = None  # the chosen configuration's servable repository
    confirmed: dict | None = None  # `--confirm`: the recommendation measured again at its rate


def system_capacity(points: list[Point], slo_ms: float, percentile: int) -> float:
    """Open-loop points: the searched rate capacity; closed-loop points: the fitted throughput under the SLO."""
    if any(p.offered_rps for p in points):
        return rate_capacity(points, slo_ms, percentile)[0]
    return max_throughput_under_slo(points, slo_ms, percentile)


def recommend(points: list[Point], slo_ms: float, percentile: int, target_rps: float, headroom: float,
              candidates: list[str] | None = None) -> Recommendation:
    """The candidate with the highest capacity under the SLO, and replicas = ceil(target x (1+headroom) / capacity)."""
    systems = sorted({p.system for p in points})
    capacity = {s: system_capacity([p for p in points if p.system == s], slo_ms, percentile) for s in systems}
    pool = {s: c for s, c in capacity.items() if candidates is None or s in candidates}
    if not pool or max(pool.values()) <= 0:
        return Recommendation(slo_ms, percentile, target_rps, headroom, capacity, None, 0.0, None,
                              f"no configuration meets p{percentile} <= {slo_ms:g} ms at any measured load")
    system = max(pool, key=pool.get)
    replicas = math.ceil(target_rps * (1 + headroom) / pool[system])
    note = f"{replicas} replica(s) of '{system}' serve {target_rps:g} req/s with {headroom:.0%} headroom at p{percentile} <= {slo_ms:g} ms"
    open_loop = [p for p in points if p.system == system and p.offered_rps]
    reached = {s: rate_capacity([p for p in points if p.system == s], slo_ms, percentile)[1] for s in systems
               if any(p.offered_rps for p in points if p.system == s)}
    if open_loop and not reached[system]:
        note += f" (capacity at least {pool[system]:.1f} req/s per replica: the SLO was not reached)"
    return Recommendation(slo_ms, percentile, target_rps, headroom, capacity, system, pool[system], replicas, note,
                          slo_reached=reached)


def with_confirmation(rec: Recommendation, confirmed: dict) -> Recommendation:
    """The recommendation after `--confirm`: kept where the confirmation met the SLO at the predicted
    rate; otherwise carried to the rate that held (max_rps and replicas recomputed, the note says so
    loudly), or no recommendation at all where no confirmed rate held."""
    rec = replace(rec, confirmed={k: v for k, v in confirmed.items() if k not in ("runs",)})
    if confirmed.get("met"):
        rec.note += f"; confirmed on a fresh server at {confirmed['rate_rps']:g} req/s"
        return rec
    p = f"p{rec.percentile}_ms"
    missed = (f"CONFIRMATION MISSED: at the predicted {confirmed['predicted_rps']:.1f} req/s a fresh server achieved "
              f"{confirmed['achieved_rps']:.1f} req/s, {p[:-3]} {confirmed[p]:.0f} ms, {confirmed['failures']} failures")
    held = confirmed.get("confirmed_rps") or 0.0
    if held <= 0:
        return replace(rec, system=None, max_rps=0.0, replicas=None,
                       note=f"{missed}; no confirmed rate met p{rec.percentile} <= {rec.slo_ms:g} ms: no recommendation")
    replicas = math.ceil(rec.target_rps * (1 + rec.headroom) / held)
    note = (f"{missed}. Carried the confirmed {held:.1f} req/s per replica: {replicas} replica(s) of '{rec.system}' serve "
            f"{rec.target_rps:g} req/s with {rec.headroom:.0%} headroom at p{rec.percentile} <= {rec.slo_ms:g} ms")
    return replace(rec, max_rps=held, replicas=replicas, note=note)


@dataclass
class PlanResults:
    """Raw results of a sweep, saved so the plan can be re-derived (`tritonize plan --from FILE`)."""

    scenario: dict
    setup: dict
    points: list[Point] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # full LoadResult dicts (Triton's view included)
    candidates: list[str] = field(default_factory=list)
    variants: dict = field(default_factory=dict)  # system -> Variant fields
    recommendation: dict | None = None  # the Recommendation derived from these points (`tritonize deploy` reads it)
    confirmation: dict | None = None  # `plan --confirm`: the chosen config measured again (predicted, confirmed, points, runs)
    replicas: dict = field(default_factory=dict)  # system -> what one replica of it is (cores, threads, memory, ...)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(self)}, indent=2))
        csv = path.with_suffix(".csv")
        fields = list(Point.__dataclass_fields__)
        cell = lambda p, f: f'"{getattr(p, f)}"' if f == "system" else ("" if getattr(p, f) is None else str(getattr(p, f)))  # noqa: E731
        csv.write_text("\n".join([",".join(fields)] + [",".join(cell(p, f) for f in fields) for p in self.points]) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> "PlanResults":
        raw = json.loads(Path(path).read_text())
        raw["points"] = [Point(**p) for p in raw["points"]]
        return cls(**raw)
