"""The deployable part of a `tritonize plan` results file: the recommended pipeline and model-step
settings, the replicas, and the capacity per replica that the autoscaler keeps each pod below."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from tritonize.planner.systems import Variant


class DeployError(ValueError):
    """Nothing can be generated; the message names the file and field at fault."""


class PlanError(DeployError):
    pass


@dataclass(frozen=True)
class DeployPlan:
    pipeline: str  # the served ensemble
    system: str  # the sweep's name for the recommended configuration
    variant: Variant  # its model-step settings, as measured
    replicas: int
    capacity_rps: float  # one replica's max request rate under the SLO
    headroom: float
    target_rps: float
    slo_ms: float
    percentile: int

    @property
    def per_pod_rps(self) -> float:
        """The request rate per pod that keeps the plan's headroom: what the autoscaler aims at."""
        return self.capacity_rps / (1 + self.headroom)


_NUMBERS = {"replicas": int, "max_rps": float, "headroom": float, "target_rps": float, "slo_ms": float, "percentile": int}


def load_plan(path: Path) -> DeployPlan:
    path = Path(path)
    if path.is_dir():
        inside = path / "results.json"
        raise PlanError(f"--plan {path}: a directory; give the plan's results file"
                        + (f" ({inside})" if inside.is_file() else " (`tritonize plan` writes results.json)"))
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan file (`tritonize plan` writes results.json)") from None
    except json.JSONDecodeError as e:
        raise PlanError(f"{path}:{e.lineno}:{e.colno}: not a JSON plan file ({e.msg})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise PlanError(f"{path}: cannot read the plan file ({e})") from None
    rec = raw.get("recommendation") if isinstance(raw, dict) else None
    if not isinstance(rec, dict):
        raise PlanError(f"{path}: field 'recommendation' is missing; re-derive it with "
                        f"`tritonize plan --from {path} --slo-ms MS --target-rps RPS`")
    if rec.get("system") is None:
        raise PlanError(f"{path}: no configuration meets the SLO ({rec.get('note') or 'recommendation.system is null'}); nothing to deploy")
    values = {}
    for name, kind in _NUMBERS.items():
        value = rec.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlanError(f"{path}: field 'recommendation.{name}' must be a number, got {value!r}")
        values[name] = kind(value)
    for name, low in (("replicas", 1), ("max_rps", 1e-9), ("target_rps", 1e-9), ("slo_ms", 1e-9)):
        if values[name] < low:
            raise PlanError(f"{path}: field 'recommendation.{name}' must be > 0, got {values[name]}")
    if values["headroom"] < 0:
        raise PlanError(f"{path}: field 'recommendation.headroom' must be >= 0, got {values['headroom']}")
    pipeline, variant = _pipeline_and_variant(path, raw, rec["system"])
    return DeployPlan(pipeline, rec["system"], variant, values["replicas"], values["max_rps"], values["headroom"], values["target_rps"],
                      values["slo_ms"], values["percentile"])


def _pipeline_and_variant(path: Path, raw: dict, system: str) -> tuple[str, Variant]:
    entry = (raw.get("variants") or {}).get(system)
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise PlanError(f"{path}: field 'variants' has no entry (with a 'model') for the recommended system {system!r}")
    settings = {k: v for k, v in entry.items() if k != "model"}
    unknown = set(settings) - {f.name for f in fields(Variant)}
    if unknown:
        raise PlanError(f"{path}: field 'variants[{system!r}]' has unknown settings {sorted(unknown)}")
    return entry["model"], Variant(**settings)
