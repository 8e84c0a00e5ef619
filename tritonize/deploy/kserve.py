"""A KServe InferenceService (serverless: Knative scales on requests per second) running the image.

The predictor is the image itself rather than KServe's stock Triton runtime: the served Python steps
import `tritonize.runtime`, which only this image has. Knative exposes one port, so the service speaks
the v2 protocol over HTTP; KServe's queue proxy drains a pod before it stops, so there is no preStop.
The pod's emptyDir volumes (/dev/shm, /tmp, logs, engine cache) need Knative's `kubernetes.podspec-emptydir`
feature, its pod-level security context `kubernetes.podspec-securitycontext`, and a GPU toleration (a plan
measured on a GPU) `kubernetes.podspec-tolerations`.
"""

from __future__ import annotations

import math
from pathlib import Path

from tritonize.deploy.kubernetes import (PORTS, Settings, annotations, config_map, container, metadata, pod_security, replica, sizes,
                                         step_configs, volumes)
from tritonize.deploy.plan import DeployPlan


def inference_service(s: Settings, plan: DeployPlan, models: list[str], size: tuple[str, str, int]) -> dict:
    c = container(s, models, {"http1": PORTS["http"]}, size)  # Knative's name for an HTTP/1 serving port
    c["name"] = "kserve-container"
    for p in ("readinessProbe", "livenessProbe"):  # Knative accepts only the serving port here
        c[p]["httpGet"]["port"] = PORTS["http"]
    predictor = {
        "minReplicas": plan.replicas,
        "maxReplicas": s.replicas_max(plan),
        "scaleMetric": "rps",
        "scaleTarget": max(1, math.floor(plan.per_pod_rps)),
        "securityContext": pod_security(s),
        "terminationGracePeriodSeconds": s.grace_s,
        "containers": [c],
        "volumes": volumes(s),
    }
    if size[2]:
        predictor["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": metadata(s, s.name, annotations=annotations(plan)),
            "spec": {"predictor": predictor}}


def kserve_manifests(plan: DeployPlan, s: Settings, repository: Path) -> dict[str, dict]:
    step, configs = step_configs(repository, plan)
    size = sizes(s, replica(plan, repository, step))
    return {"configmap.yaml": config_map(s, configs), "inferenceservice.yaml": inference_service(s, plan, list(configs), size)}
