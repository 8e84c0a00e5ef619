"""A KServe InferenceService (serverless: Knative scales on requests per second) running the image.

The predictor is the image itself rather than KServe's stock Triton runtime: the served Python steps
import `tritonize.runtime`, which only this image has. Knative exposes one port, so the service speaks
the v2 protocol over HTTP; KServe's queue proxy drains a pod before it stops, so there is no preStop.
The pod's emptyDir volumes (/dev/shm, engine cache) need Knative's `kubernetes.podspec-emptydir` feature.
"""

from __future__ import annotations

import math
from pathlib import Path

from tritonize.deploy.kubernetes import PORTS, Settings, config_map, container, metadata, pod_security, step_config, volumes
from tritonize.deploy.plan import DeployPlan


def inference_service(s: Settings, plan: DeployPlan, step: str) -> dict:
    c = container(s, step, {"http1": PORTS["http"]})  # Knative's name for an HTTP/1 serving port
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
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": metadata(s, s.name),
            "spec": {"predictor": predictor}}


def kserve_manifests(plan: DeployPlan, s: Settings, repository: Path) -> dict[str, dict]:
    step, pbtxt = step_config(repository, plan)
    return {"configmap.yaml": config_map(s, pbtxt), "inferenceservice.yaml": inference_service(s, plan, step)}
