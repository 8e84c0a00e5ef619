"""Kubernetes manifests for the image (see the Dockerfile) from a capacity plan.

- a ConfigMap with the model step's config.pbtxt as the plan measured it (instances, rows per run,
  queue delay, threads: `apply_variant`, the planner's own code), mounted over the image's copy;
- a Deployment with the plan's replicas, GPU limits, readiness/liveness/startup probes, and a grace
  period covering the drain: preStop keeps the pod serving while endpoints drop it, then SIGTERM
  makes `tritonize serve` turn readiness off and let in-flight requests finish;
- a Service (HTTP, gRPC, metrics), a PodDisruptionBudget, a ServiceMonitor for Prometheus;
- a HorizontalPodAutoscaler on a per-pod Triton metric (the pipeline's successful requests per second,
  through the custom-metrics API), aiming at the plan's capacity per replica less its headroom, and the
  prometheus-adapter rule that serves that metric.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tritonize.planner.systems import apply_variant, read_config
from tritonize.contract.model_config import engine_model
from tritonize.contract.model_config import render
from tritonize.deploy.plan import DeployError, DeployPlan

# The schemas the tests validate against. Only GA APIs are used (apps/v1, autoscaling/v2, policy/v1).
KUBERNETES_VERSION = "1.33.0"
# What the image's ENTRYPOINT serves (tests/deploy/test_dockerfile.py checks the Dockerfile against these).
# health: the supervisor's readiness (false while a step is restored or the server drains); Triton's own
# /v2/health/ready on http cannot say either.
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002, "health": 8003}
REPOSITORY = "/opt/tritonize/model_repository"
ENGINE_CACHE = "/var/cache/tritonize/engines"
USER_ID = 1000  # triton-server in the NGC image
LAUNCHER_KILL_MARGIN_S = 15  # TritonServer.stop() waits exit timeout + 15 s before SIGKILL
GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class Settings:
    image: str
    name: str
    namespace: str | None = None
    gpus: int = 1
    cpu: str = "4"
    memory: str = "16Gi"
    shm: str = "1Gi"  # the Python backend moves tensors through /dev/shm; a pod's default is 64 MiB
    max_replicas: int | None = None  # default: twice the plan's replicas
    exit_timeout_s: int = 30  # in-flight requests may run this long after SIGTERM
    drain_delay_s: int = 10  # preStop: time for endpoints to stop sending new requests
    startup_s: int = 600  # engine build (TensorRT) + model load

    def __post_init__(self):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?", self.name):
            raise DeployError(f"name {self.name!r} must be a DNS-1123 label of at most 52 characters (lower case, digits, '-')")
        if not self.image or any(c.isspace() for c in self.image):
            raise DeployError(f"image {self.image!r} must be an image reference without spaces")
        for field, value, low in (("gpus", self.gpus, 0), ("exit_timeout_s", self.exit_timeout_s, 1),
                                  ("drain_delay_s", self.drain_delay_s, 0), ("startup_s", self.startup_s, 10)):
            if value < low:
                raise DeployError(f"{field} must be >= {low}, got {value}")

    @property
    def grace_s(self) -> int:
        return self.drain_delay_s + self.exit_timeout_s + LAUNCHER_KILL_MARGIN_S + 5

    def replicas_max(self, plan: DeployPlan) -> int:
        top = self.max_replicas if self.max_replicas is not None else 2 * plan.replicas
        if top < plan.replicas:
            raise DeployError(f"max_replicas ({top}) must be >= the plan's replicas ({plan.replicas})")
        return top


def default_name(pipeline: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", pipeline.lower())).strip("-")[:52] or "tritonize"


def metric_name(plan: DeployPlan) -> str:
    return f"triton_{re.sub(r'[^a-zA-Z0-9]', '_', plan.pipeline)}_requests_per_second"


def quantity(value: float) -> str:
    """A Kubernetes quantity: whole units, or milli-units for a fractional value (rounded down)."""
    milli = math.floor(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def step_config(repository: Path, plan: DeployPlan) -> tuple[str, str]:
    """The model step's name and its config.pbtxt with the plan's settings applied."""
    pipeline_config = Path(repository) / plan.pipeline / "config.pbtxt"
    step = (engine_model(repository, plan.pipeline) if pipeline_config.exists() else None) or f"{plan.pipeline}_model"
    path = Path(repository) / step / "config.pbtxt"
    if not path.exists():
        raise DeployError(f"{path} not found: pass --repository, the repository the image was built from "
                          f"(the plan measured pipeline {plan.pipeline!r})")
    return step, render(apply_variant(read_config(path), plan.variant))


def metadata(s: Settings, name: str, **extra) -> dict:
    meta = {"name": name, **({"namespace": s.namespace} if s.namespace else {}), "labels": labels(s)}
    return meta | extra


def labels(s: Settings) -> dict:
    return {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "tritonize", "app.kubernetes.io/component": "triton"}


def config_map(s: Settings, pbtxt: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(s, f"{s.name}-model-config"), "data": {"config.pbtxt": pbtxt}}


def probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "health"}, "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures}


def container(s: Settings, step: str, ports: dict[str, int]) -> dict:
    resources = {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": {"cpu": s.cpu, "memory": s.memory}}
    if s.gpus:
        resources["limits"][GPU] = s.gpus
    return {
        "name": "triton",
        "image": s.image,
        # Appended to the image's ENTRYPOINT (`tritonize serve --binary path --host 0.0.0.0 ...`).
        "args": ["--exit-timeout", str(s.exit_timeout_s), "--startup-timeout", str(s.startup_s)],
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()],
        "resources": resources,
        "readinessProbe": probe("/v2/health/ready", 5, 2),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "volumeMounts": volume_mounts(step),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def volume_mounts(step: str) -> list[dict]:
    return [
        {"name": "model-config", "mountPath": f"{REPOSITORY}/{step}/config.pbtxt", "subPath": "config.pbtxt", "readOnly": True},
        {"name": "engine-cache", "mountPath": ENGINE_CACHE},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]


def volumes(s: Settings) -> list[dict]:
    return [
        {"name": "model-config", "configMap": {"name": f"{s.name}-model-config"}},
        # Per pod, so each start builds TensorRT engines again; a volume per GPU type keeps them.
        {"name": "engine-cache", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm}},
    ]


def pod_security(s: Settings) -> dict:
    return {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID}


def deployment(s: Settings, plan: DeployPlan, step: str) -> dict:
    c = container(s, step, PORTS)
    c["startupProbe"] = probe("/v2/health/ready", 10, math.ceil(s.startup_s / 10))
    c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(s.drain_delay_s)]}}}
    pod = {"securityContext": pod_security(s), "terminationGracePeriodSeconds": s.grace_s, "containers": [c], "volumes": volumes(s)}
    if s.gpus:
        pod["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(s, s.name),
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": labels(s)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(s)}, "spec": pod},
        },
    }


def service(s: Settings) -> dict:
    ports = [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in PORTS.items()]
    ports[1]["appProtocol"] = "kubernetes.io/h2c"  # gRPC
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(s, s.name),
            "spec": {"type": "ClusterIP", "selector": labels(s), "ports": ports}}


def autoscaler(s: Settings, plan: DeployPlan) -> dict:
    metric = {"metric": {"name": metric_name(plan)}, "target": {"type": "AverageValue", "averageValue": quantity(plan.per_pod_rps)}}
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata(s, s.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
            "minReplicas": plan.replicas,  # the plan's floor: its target rate with headroom
            "maxReplicas": s.replicas_max(plan),
            "metrics": [{"type": "Pods", "pods": metric}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def disruption_budget(s: Settings) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(s, s.name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(s)}}}


def service_monitor(s: Settings) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": metadata(s, s.name),
            "spec": {"selector": {"matchLabels": labels(s)}, "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]}}


def adapter_rule(s: Settings, plan: DeployPlan) -> dict:
    """A prometheus-adapter rule (merge it into the adapter's rules): Triton's per-model success counter
    as a per-pod rate, for this pipeline's ensemble only."""
    rule = {
        "seriesQuery": 'nv_inference_request_success{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^nv_inference_request_success$", "as": metric_name(plan)},
        "metricsQuery": f'sum(rate(<<.Series>>{{<<.LabelMatchers>>,model="{plan.pipeline}"}}[1m])) by (<<.GroupBy>>)',
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(s, f"{s.name}-adapter-rule"),
            "data": {"rules.yaml": yaml.safe_dump({"rules": [rule]}, sort_keys=False)}}


def manifests(plan: DeployPlan, s: Settings, repository: Path) -> dict[str, dict]:
    """File name -> document; `kubectl apply -f DIR` applies them (not the adapter rule in its subfolder)."""
    step, pbtxt = step_config(repository, plan)
    s.replicas_max(plan)
    return {
        "configmap.yaml": config_map(s, pbtxt),
        "deployment.yaml": deployment(s, plan, step),
        "service.yaml": service(s),
        "hpa.yaml": autoscaler(s, plan),
        "pdb.yaml": disruption_budget(s),
        "servicemonitor.yaml": service_monitor(s),
        "prometheus-adapter/rule.yaml": adapter_rule(s, plan),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (config.pbtxt, the adapter's rules) as literal blocks, readable in review."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def write(documents: dict[str, dict], out: Path) -> list[Path]:
    written = []
    for rel, doc in documents.items():
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False))
        written.append(path)
    return written
