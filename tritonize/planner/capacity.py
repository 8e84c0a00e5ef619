"""Capacity planning from measurements: the highest throughput each configuration sustains under a
latency SLO, the configuration to choose, and the replicas a target request rate needs.

Everything here works on saved points (JSON), so a plan can be re-derived without re-running load.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
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

    def latency(self, percentile: int) -> float:
        return getattr(self, f"p{percentile}_ms")


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


def recommend(points: list[Point], slo_ms: float, percentile: int, target_rps: float, headroom: float,
              candidates: list[str] | None = None) -> Recommendation:
    """The candidate with the highest capacity under the SLO, and replicas = ceil(target x (1+headroom) / capacity)."""
    systems = sorted({p.system for p in points})
    capacity = {s: max_throughput_under_slo([p for p in points if p.system == s], slo_ms, percentile) for s in systems}
    pool = {s: c for s, c in capacity.items() if candidates is None or s in candidates}
    if not pool or max(pool.values()) <= 0:
        return Recommendation(slo_ms, percentile, target_rps, headroom, capacity, None, 0.0, None,
                              f"no configuration meets p{percentile} <= {slo_ms:g} ms at any measured load")
    system = max(pool, key=pool.get)
    replicas = math.ceil(target_rps * (1 + headroom) / pool[system])
    note = f"{replicas} replica(s) of '{system}' serve {target_rps:g} req/s with {headroom:.0%} headroom at p{percentile} <= {slo_ms:g} ms"
    return Recommendation(slo_ms, percentile, target_rps, headroom, capacity, system, pool[system], replicas, note)


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

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(self)}, indent=2))
        csv = path.with_suffix(".csv")
        fields = list(Point.__dataclass_fields__)
        csv.write_text("\n".join([",".join(fields)] + [",".join(f'"{getattr(p, f)}"' if f == "system" else str(getattr(p, f)) for f in fields) for p in self.points]) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> "PlanResults":
        raw = json.loads(Path(path).read_text())
        raw["points"] = [Point(**p) for p in raw["points"]]
        return cls(**raw)
