"""Kubernetes manifests for the image (see the Dockerfile) from a capacity plan.

- a ConfigMap with the configs the plan measured (the model step's instances, max_batch_size, queue
  delay and threads, and an ensemble lowered to that batch size: `variant_configs`, the planner's own
  code), each mounted over the image's copy;
- a Deployment with the plan's replicas, each pod sized as the plan's replica (its cores, its measured
  memory plus headroom, a GPU only for a plan measured on one), readiness/liveness/startup probes, a
  grace period covering the drain (preStop keeps the pod serving while endpoints drop it, then SIGTERM
  makes `tritonize serve` turn readiness off and let in-flight requests finish), and a security context
  that meets the "restricted" Pod Security Standard with a read-only root (emptyDir where the server
  writes: /tmp, /dev/shm, its log folder, the engine cache);
- a Service (HTTP, gRPC, metrics), a PodDisruptionBudget, a ServiceMonitor for Prometheus;
- a HorizontalPodAutoscaler on a per-pod Triton metric (the pipeline's successful requests per second,
  through the custom-metrics API), aiming at the plan's capacity per replica less its headroom, and the
  prometheus-adapter rule that serves that metric.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from tritonize.contract.files import read_manifest
from tritonize.contract.model_config import engine_model, read_config, render
from tritonize.deploy.plan import DeployError, DeployPlan, Replica
from tritonize.planner.systems import variant_configs

# The schemas the tests validate against. Only GA APIs are used (apps/v1, autoscaling/v2, policy/v1).
KUBERNETES_VERSION = "1.33.0"
# What the image's ENTRYPOINT serves (tests/deploy/test_dockerfile.py checks the Dockerfile against these).
# health: the supervisor's readiness (false while a step is restored or the server drains); Triton's own
# /v2/health/ready on http cannot say either.
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002, "health": 8003}
REPOSITORY = "/opt/tritonize/model_repository"
ENGINE_CACHE = "/var/cache/tritonize/engines"
LOG_DIR = "/var/log/tritonize"  # --log-file; /tmp holds the rest the server writes (HOME=/tmp in the image)
USER_ID = 1000  # triton-server in the NGC image
LAUNCHER_KILL_MARGIN_S = 15  # TritonServer.stop() waits exit timeout + 15 s before SIGKILL
GPU = "nvidia.com/gpu"
# Memory per pod: the replica's measured peak plus this share (allocator growth, the stubs' shared-memory
# regions), never below the floor. A plan without a measurement gets the default and says so.
MEMORY_HEADROOM = 0.5
MEMORY_FLOOR_MIB = 512
DEFAULT_MEMORY = "2Gi"
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


@dataclass(frozen=True)
class Settings:
    image: str
    name: str
    namespace: str | None = None
    gpus: int | None = None  # None: 1 for a plan measured on a GPU, else 0
    cpu: str | None = None  # None: the replica's cores
    memory: str | None = None  # None: the replica's measured memory plus MEMORY_HEADROOM
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
        for option, value in (("--cpu", self.cpu), ("--memory", self.memory), ("shm", self.shm)):
            if value is not None and not QUANTITY.fullmatch(value):
                raise DeployError(f"{option} {value!r}: not a Kubernetes quantity (e.g. 2, 500m for cpu; 1536Mi, 2Gi for memory)")
            if value is not None and float(QUANTITY.fullmatch(value).group(1)) <= 0:  # type: ignore[union-attr]
                raise DeployError(f"{option} {value!r}: must be more than 0")
        for field, value, low in (("gpus", self.gpus or 0, 0), ("exit_timeout_s", self.exit_timeout_s, 1),
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


def convert_hint(plan: DeployPlan, repository: Path) -> str:
    """The Dockerfile's CONVERT argument that writes the planned pipeline, from its conversion's manifest
    (in the plan's own repository, or the one given)."""
    for where in ([Path(plan.repository)] if plan.repository else []) + [Path(repository)]:
        report = ((where / plan.pipeline).is_dir() and (read_manifest(where, plan.pipeline) or {}).get("report")) or {}
        if "quantized" in report and report.get("source"):  # an encoder conversion
            task = "" if report.get("task", "embedding") == "embedding" else f" --task {report['task']}"
            return (f'--build-arg CONVERT="bert --model {report["source"]}{task}{" --quantize" if report["quantized"] else ""} '
                    f'--name {plan.pipeline}"')
    return f'--build-arg CONVERT="<the tritonize convert arguments that wrote {plan.pipeline}>"'


def check_models(repository: Path, plan: DeployPlan) -> str:
    """The planned pipeline is in the repository the image is built from; its model step's name."""
    repository = Path(repository)
    if not (repository / plan.pipeline / "config.pbtxt").is_file():
        held = sorted(p.parent.name for p in repository.glob("*/config.pbtxt") if (p.parent / "tritonize.json").is_file())
        raise DeployError(f"the plan's pipeline {plan.pipeline!r} is not in --repository {repository} "
                          f"(it holds: {', '.join(held) or 'no pipelines'}): pass the repository the image was built from, and "
                          f"build the image with it: docker build {convert_hint(plan, repository)} (the default CONVERT=demo "
                          f"converts the demo models only, no -int8 ones)")
    step = engine_model(repository, plan.pipeline) or f"{plan.pipeline}_model"
    if not (repository / step / "config.pbtxt").is_file():
        raise DeployError(f"{repository / step / 'config.pbtxt'} not found: pass --repository, the repository the image was built "
                          f"from (the plan measured pipeline {plan.pipeline!r})")
    return step


def replica(plan: DeployPlan, repository: Path, step: str) -> Replica:
    """The plan's replica; for an older plan, derived from its variant, on the device its model step's
    config names."""
    r = plan.replica or Replica.derive(plan.variant)
    if r.derived:
        kinds = {g.kind for g in read_config(Path(repository) / step / "config.pbtxt").instance_group}
        r = replace(r, device="gpu" if 1 in kinds else "cpu")  # KIND_GPU
    return r


def step_configs(repository: Path, plan: DeployPlan) -> tuple[str, dict[str, str]]:
    """The model step's name and every config the plan's settings change (model name -> config.pbtxt).
    ONNX Runtime runs as many threads per instance as the replica measured, never one per node core."""
    step = check_models(repository, plan)
    threads = plan.variant.threads or replica(plan, repository, step).ort_threads
    configs = variant_configs(Path(repository), plan.pipeline, replace(plan.variant, threads=threads))
    return step, {model: render(config) for model, config in configs.items()}


def sizes(s: Settings, r: Replica) -> tuple[str, str, int]:
    """(cpu, memory, gpus) per pod: the options where given, else the plan's replica."""
    cpu = s.cpu or str(r.cores)
    if s.memory:
        memory = s.memory
    elif r.memory_mib:
        memory = f"{max(MEMORY_FLOOR_MIB, math.ceil(r.memory_mib * (1 + MEMORY_HEADROOM)))}Mi"
    else:
        memory = DEFAULT_MEMORY
    gpus = s.gpus if s.gpus is not None else (1 if r.device == "gpu" else 0)
    return cpu, memory, gpus


def notes(plan: DeployPlan, s: Settings, repository: Path) -> list[str]:
    """What the user should know about how the pods were sized, one line each."""
    step = check_models(repository, plan)
    r = replica(plan, repository, step)
    cpu, memory, gpus = sizes(s, r)
    lines = [f"each pod: cpu {cpu}, memory {memory}" + (f", {gpus} GPU" if gpus else ", no GPU")
             + f" (replica: {r.cores} core(s), {r.instances} instance(s) x {r.ort_threads} ONNX Runtime thread(s), {r.device})"]
    if r.derived:
        lines.append("the plan records no replica (an older plan): derived from its settings (a core per ONNX Runtime thread of "
                     f"each instance){'' if s.memory else f'; memory not measured, {DEFAULT_MEMORY} assumed'}: set --cpu/--memory "
                     "or plan again")
    if gpus and r.device == "cpu":
        lines.append(f"--gpus {gpus}: the plan measured a CPU replica; its capacity says nothing about a GPU")
    if plan.confirmation:
        lines.append(f"confirmation: {plan.confirmation}")
    return lines


def metadata(s: Settings, name: str, **extra) -> dict:
    meta = {"name": name, **({"namespace": s.namespace} if s.namespace else {}), "labels": labels(s)}
    return meta | extra


def labels(s: Settings) -> dict:
    return {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "tritonize", "app.kubernetes.io/component": "triton"}


def config_map(s: Settings, configs: dict[str, str]) -> dict:
    """Model name -> config.pbtxt, one key each (`<model>.config.pbtxt`), mounted over the image's files."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(s, f"{s.name}-model-config"),
            "data": {config_key(m): text for m, text in configs.items()}}


def probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "health"}, "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures}


def config_key(model: str) -> str:
    return f"{model}.config.pbtxt"


def container(s: Settings, models: list[str], ports: dict[str, int], size: tuple[str, str, int]) -> dict:
    """The server's container, sized (cpu, memory, gpus), with a read-only root and nothing it may gain."""
    cpu, memory, gpus = size
    resources: dict = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}  # Guaranteed QoS
    if gpus:
        resources["limits"][GPU] = gpus
    return {
        "name": "triton",
        "image": s.image,
        # Appended to the image's ENTRYPOINT (`tritonize serve --binary path --host 0.0.0.0 ...`).
        "args": ["--exit-timeout", str(s.exit_timeout_s), "--startup-timeout", str(s.startup_s),
                 "--log-file", f"{LOG_DIR}/tritonserver.log"],
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],  # the root is read-only
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()],
        "resources": resources,
        "readinessProbe": probe("/v2/health/ready", 5, 2),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "volumeMounts": volume_mounts(models),
        "securityContext": container_security(),
    }


def volume_mounts(models: list[str]) -> list[dict]:
    return [
        *({"name": "model-config", "mountPath": f"{REPOSITORY}/{m}/config.pbtxt", "subPath": config_key(m), "readOnly": True}
          for m in models),
        {"name": "engine-cache", "mountPath": ENGINE_CACHE},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "logs", "mountPath": LOG_DIR},
    ]


def volumes(s: Settings) -> list[dict]:
    return [
        {"name": "model-config", "configMap": {"name": f"{s.name}-model-config"}},
        # Per pod, so each start builds TensorRT engines again; a volume per GPU type keeps them.
        {"name": "engine-cache", "emptyDir": {}},
        # The Python backend moves tensors through shared memory; Memory-backed, it counts against the pod's memory.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},  # HOME=/tmp: the server's scratch files and caches
        {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}},
    ]


def pod_security(s: Settings) -> dict:
    """Pod level of the "restricted" Pod Security Standard: non-root, the runtime's default seccomp profile."""
    return {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict:
    """Container level of the "restricted" standard, and a read-only root filesystem."""
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


def annotations(plan: DeployPlan) -> dict:
    """What the pods were sized from, readable with kubectl describe."""
    out = {"tritonize.io/plan-system": plan.system[:250], "tritonize.io/capacity-rps": f"{plan.capacity_rps:.1f}",
           "tritonize.io/slo": f"p{plan.percentile} <= {plan.slo_ms:g} ms"}
    if plan.replica:
        out["tritonize.io/replica"] = json.dumps({k: v for k, v in plan.replica.__dict__.items() if v is not None}, sort_keys=True)
    if plan.confirmation:
        out["tritonize.io/confirmation"] = plan.confirmation
    return out


def deployment(s: Settings, plan: DeployPlan, models: list[str], size: tuple[str, str, int]) -> dict:
    c = container(s, models, PORTS, size)
    c["startupProbe"] = probe("/v2/health/ready", 10, math.ceil(s.startup_s / 10))
    c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(s.drain_delay_s)]}}}
    pod = {"securityContext": pod_security(s), "terminationGracePeriodSeconds": s.grace_s, "containers": [c], "volumes": volumes(s)}
    if size[2]:  # only a pod that asks for a GPU may land on (and tolerate) a GPU node
        pod["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(s, s.name, annotations=annotations(plan)),
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
    step, configs = step_configs(repository, plan)
    s.replicas_max(plan)
    size = sizes(s, replica(plan, repository, step))
    return {
        "configmap.yaml": config_map(s, configs),
        "deployment.yaml": deployment(s, plan, list(configs), size),
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
