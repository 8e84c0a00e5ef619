"""`tritonize deploy kubernetes` on the suite's own small plan: every document passes the Kubernetes schemas
(kubernetes-validate, strict, pinned version) and its numbers are the plan's; bad plans write nothing."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from tritonize.cli import app
from tritonize.deploy.kubernetes import KUBERNETES_VERSION, LAUNCHER_KILL_MARGIN_S, PORTS, REPOSITORY, metric_name
from tritonize.deploy.plan import load_plan
from tests.conftest import CLASSIFIER

IMAGE = "registry.example.com/tritonize:test"
CUSTOM_RESOURCES = {"ServiceMonitor", "InferenceService"}  # kubernetes-validate has no schema for these


def deploy(plan: Path, out: Path, repository: Path, *extra: str):
    return CliRunner().invoke(app, ["deploy", "kubernetes", "--plan", str(plan), "--image", IMAGE, "--out", str(out),
                                    "--repository", str(repository), *extra])


def documents(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): yaml.safe_load(p.read_text()) for p in sorted(out.rglob("*.yaml"))}


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def said(result, message: str) -> bool:
    """The CLI printed message (rich wraps long lines, even inside a path)."""
    return "".join(message.split()) in "".join(result.output.split())


def milli(q: str) -> float:
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


@pytest.fixture(scope="module")
def plan_file(small_plan) -> Path:
    out, result = small_plan
    assert result.exit_code == 0, result.output
    return out / "results.json"


@pytest.fixture(scope="module")
def manifests(plan_file, built, tmp_path_factory):
    out = tmp_path_factory.mktemp("k8s")
    r = deploy(plan_file, out, built["repository"])
    assert r.exit_code == 0, r.output
    return documents(out)


def test_every_document_passes_the_kubernetes_schemas(manifests):
    assert set(manifests) == {"configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml",
                              "servicemonitor.yaml", "prometheus-adapter/rule.yaml"}
    for name, doc in manifests.items():
        if doc["kind"] in CUSTOM_RESOURCES:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                validate(doc)  # if a schema ever ships, this test must start validating it
        else:
            validate(doc)
    broken = copy.deepcopy(manifests["deployment.yaml"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/typo"
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: an unknown field fails
        validate(broken)


def test_replicas_autoscaling_and_model_step_settings_are_the_plans(manifests, plan_file):
    raw = json.loads(plan_file.read_text())
    rec = raw["recommendation"]
    variant = raw["variants"][rec["system"]]
    assert variant["model"] == CLASSIFIER
    assert manifests["deployment.yaml"]["spec"]["replicas"] == rec["replicas"]

    hpa = manifests["hpa.yaml"]["spec"]
    assert hpa["minReplicas"] == rec["replicas"] and hpa["maxReplicas"] == 2 * rec["replicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    per_pod = rec["max_rps"] / (1 + rec["headroom"])
    assert milli(metric["pods"]["target"]["averageValue"]) == pytest.approx(per_pod, abs=1e-3)

    config = text_format.Parse(manifests["configmap.yaml"]["data"]["config.pbtxt"], mc.ModelConfig())
    assert config.name == f"{CLASSIFIER}_model"
    assert config.parameters["max_rows_per_run"].string_value == str(variant["max_batch_size"])
    assert config.parameters["intra_op_threads"].string_value == str(variant["threads"])
    assert config.instance_group[0].count == (variant["instances"] or 1)
    assert config.dynamic_batching.max_queue_delay_microseconds == variant["max_queue_delay_us"]


def test_the_metric_the_autoscaler_reads_is_the_one_the_adapter_serves(manifests, plan_file):
    hpa_metric = manifests["hpa.yaml"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load(manifests["prometheus-adapter/rule.yaml"]["data"]["rules.yaml"])["rules"]
    assert rule["name"]["as"] == hpa_metric == metric_name(load_plan(plan_file))
    assert f'model="{CLASSIFIER}"' in rule["metricsQuery"] and "rate(" in rule["metricsQuery"]


def test_pod_probes_drain_gpu_and_wiring(manifests):
    pod = manifests["deployment.yaml"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == IMAGE and c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" and c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # engine build + model load
    args = dict(zip(c["args"][::2], c["args"][1::2]))
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    # the grace period covers: endpoints dropping the pod, in-flight requests, the launcher's own kill margin
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + int(args["--exit-timeout"]) + LAUNCHER_KILL_MARGIN_S
    assert int(args["--startup-timeout"]) <= startup["periodSeconds"] * startup["failureThreshold"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == PORTS
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["model-config"]["mountPath"] == f"{REPOSITORY}/{CLASSIFIER}_model/config.pbtxt"
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0

    labels = manifests["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    svc = manifests["service.yaml"]["spec"]
    assert svc["selector"] == labels and {p["targetPort"] for p in svc["ports"]} == set(PORTS)
    assert manifests["pdb.yaml"]["spec"]["selector"]["matchLabels"] == labels
    monitor = manifests["servicemonitor.yaml"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= manifests["service.yaml"]["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]


def test_kserve_inference_service(plan_file, built, tmp_path):
    r = deploy(plan_file, tmp_path, built["repository"], "--kind", "kserve", "--max-replicas", "9")
    assert r.exit_code == 0, r.output
    docs = documents(tmp_path)
    assert set(docs) == {"configmap.yaml", "inferenceservice.yaml"}
    validate(docs["configmap.yaml"])
    isvc = docs["inferenceservice.yaml"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    plan = load_plan(plan_file)
    assert predictor["minReplicas"] == plan.replicas and predictor["maxReplicas"] == 9
    assert predictor["scaleMetric"] == "rps" and predictor["scaleTarget"] == max(1, math.floor(plan.per_pod_rps))
    # The predictor inlines a PodSpec: validate those fields as a Pod.
    pod_fields = {k: v for k, v in predictor.items() if k not in {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}}
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_fields})
    assert [p["containerPort"] for p in predictor["containers"][0]["ports"]] == [PORTS["http"]]


def _mutate(raw: dict, how: str) -> dict:
    rec = raw["recommendation"]
    if how == "no recommendation":
        del raw["recommendation"]
    elif how == "no config meets the SLO":
        rec.update(system=None, replicas=None, note="no configuration meets p95 <= 1 ms at any measured load")
    elif how == "replicas not a number":
        rec["replicas"] = "three"
    elif how == "zero capacity":
        rec["max_rps"] = 0
    elif how == "no variant":
        raw["variants"] = {}
    return raw


@pytest.mark.parametrize("how, message", [
    ("no recommendation", "field 'recommendation' is missing"),
    ("no config meets the SLO", "no configuration meets p95 <= 1 ms"),
    ("replicas not a number", "field 'recommendation.replicas' must be a number"),
    ("zero capacity", "field 'recommendation.max_rps' must be > 0"),
    ("no variant", "field 'variants' has no entry"),
    ("not json", "not a JSON plan file"),
    ("missing file", "no such plan file"),
])
def test_a_bad_plan_fails_clearly_and_writes_nothing(plan_file, built, tmp_path, how, message):
    bad = tmp_path / "results.json"
    if how == "not json":
        bad.write_text("{ not json")
    elif how != "missing file":
        bad.write_text(json.dumps(_mutate(json.loads(plan_file.read_text()), how)))
    r = deploy(bad, tmp_path / "out", built["repository"])
    assert r.exit_code == 1 and said(r, message)
    assert not (tmp_path / "out").exists()


def test_a_repository_without_the_planned_pipeline_fails_clearly(plan_file, tmp_path):
    r = deploy(plan_file, tmp_path / "out", tmp_path / "empty-repo")
    assert r.exit_code == 1 and said(r, f"{CLASSIFIER}_model/config.pbtxt not found")
    assert not (tmp_path / "out").exists()


@pytest.mark.unit
def test_quantities_are_exact_or_rounded_down_in_milli_units():
    from tritonize.deploy.kubernetes import quantity

    assert quantity(250.0) == "250" and quantity(153.4567) == "153456m" and quantity(0.5) == "500m"
    for value in (250.0, 153.4567, 0.5, 1e-3):
        assert 0 <= value - milli(quantity(value)) < 1e-3
