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


DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class Replica:
    """What one replica of the plan is (`recommendation.replica`): the cores its server ran on (`cpus`,
    the pinned list, if pinned), ONNX Runtime threads per instance, model-step instances, the device, and
    the memory it used under load. `derived`: an older plan recorded none, so it was derived from the
    variant's settings, and the memory is unknown (None)."""

    cores: int
    ort_threads: int
    instances: int
    device: str = "cpu"
    memory_mib: float | None = None
    cpus: str | None = None
    derived: bool = False

    def __post_init__(self):
        for field, value in (("cores", self.cores), ("ort_threads", self.ort_threads), ("instances", self.instances)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanError(f"field 'recommendation.replica.{field}' must be a whole number >= 1, got {value!r}")
        if self.device not in DEVICES:
            raise PlanError(f"field 'recommendation.replica.device' must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.memory_mib is not None and (isinstance(self.memory_mib, bool) or not isinstance(self.memory_mib, (int, float))
                                            or not math.isfinite(self.memory_mib) or self.memory_mib <= 0):
            raise PlanError(f"field 'recommendation.replica.memory_mib' must be a number > 0, got {self.memory_mib!r}")

    @classmethod
    def from_record(cls, path: Path, raw) -> "Replica":
        if not isinstance(raw, dict):
            raise PlanError(f"{path}: field 'recommendation.replica' must be an object, got {raw!r}")
        known = {"cores", "cpus", "ort_threads", "instances", "device", "memory_mib"}
        missing = sorted({"cores", "ort_threads", "instances", "device"} - set(raw))
        if missing:
            raise PlanError(f"{path}: field 'recommendation.replica.{missing[0]}' is missing")
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except PlanError as e:
            raise PlanError(f"{path}: {e}") from None

    @classmethod
    def derive(cls, variant: Variant) -> "Replica":
        """An older plan: one core per ONNX Runtime thread of each instance, as the variant set them."""
        threads, instances = variant.threads or 1, variant.instances or 1
        return cls(cores=threads * instances, ort_threads=threads, instances=instances, derived=True)


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
    replica: Replica | None = None
    repository: str | None = None  # the chosen configuration's servable repository, as the plan wrote it
    confirmation: str | None = None  # what `plan --confirm` found, in words

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
    replica = Replica.from_record(path, rec["replica"]) if rec.get("replica") is not None else Replica.derive(variant)
    repository = rec.get("repository")
    if repository is not None and not isinstance(repository, str):
        raise PlanError(f"{path}: field 'recommendation.repository' must be a path, got {repository!r}")
    return DeployPlan(pipeline, rec["system"], variant, values["replicas"], values["max_rps"], values["headroom"], values["target_rps"],
                      values["slo_ms"], values["percentile"], replica, repository, _confirmation(rec.get("confirmed"), raw.get("confirmation")))


def _confirmation(confirmed, legacy) -> str | None:
    """`recommendation.confirmed` (or an older plan's `confirmation`) in words, for the manifests' annotations."""
    record = confirmed if isinstance(confirmed, dict) else legacy if isinstance(legacy, dict) else None
    if not record:
        return None
    parts = [f"{k} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
             for k, v in record.items() if isinstance(v, (str, int, float, bool)) and k != "system"]
    return ", ".join(parts)[:250] or None


def _pipeline_and_variant(path: Path, raw: dict, system: str) -> tuple[str, Variant]:
    entry = (raw.get("variants") or {}).get(system)
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise PlanError(f"{path}: field 'variants' has no entry (with a 'model') for the recommended system {system!r}")
    settings = {k: v for k, v in entry.items() if k != "model"}
    unknown = set(settings) - {f.name for f in fields(Variant)}
    if unknown:
        raise PlanError(f"{path}: field 'variants[{system!r}]' has unknown settings {sorted(unknown)}")
    return entry["model"], Variant(**settings)
