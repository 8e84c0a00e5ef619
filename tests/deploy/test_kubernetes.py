"""`tritonize deploy kubernetes` on the suite's own small plan: every document passes the Kubernetes schemas
(kubernetes-validate, strict, pinned version) and its numbers are the plan's; bad plans write nothing."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
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

    config = text_format.Parse(manifests["configmap.yaml"]["data"][f"{CLASSIFIER}_model.config.pbtxt"], mc.ModelConfig())
    assert config.name == f"{CLASSIFIER}_model"
    assert config.max_batch_size == variant["max_batch_size"]  # Triton's own, as the plan measured it
    assert config.parameters["max_rows_per_run"].string_value == str(variant["max_batch_size"])
    assert config.parameters["intra_op_threads"].string_value == str(variant["threads"])
    assert config.instance_group[0].count == (variant["instances"] or 1)
    assert config.dynamic_batching.max_queue_delay_microseconds == variant["max_queue_delay_us"]


def test_the_metric_the_autoscaler_reads_is_the_one_the_adapter_serves(manifests, plan_file):
    hpa_metric = manifests["hpa.yaml"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load(manifests["prometheus-adapter/rule.yaml"]["data"]["rules.yaml"])["rules"]
    assert rule["name"]["as"] == hpa_metric == metric_name(load_plan(plan_file))
    assert f'model="{CLASSIFIER}"' in rule["metricsQuery"] and "rate(" in rule["metricsQuery"]


def test_pod_probes_drain_gpu_and_wiring(manifests, plan_file):
    pod = manifests["deployment.yaml"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == IMAGE and "nvidia.com/gpu" not in c["resources"]["limits"] and "tolerations" not in pod  # measured on CPU
    rec = json.loads(plan_file.read_text())["recommendation"]
    variant = json.loads(plan_file.read_text())["variants"][rec["system"]]
    cores = rec["replica"]["cores"] if rec.get("replica") else (variant["threads"] or 1) * (variant["instances"] or 1)
    assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"] == str(cores)  # the cores its replica used
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" and c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # engine build + model load
    args = dict(zip(c["args"][::2], c["args"][1::2]))
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    # the grace period covers: endpoints dropping the pod, in-flight requests, the launcher's own kill margin
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + int(args["--exit-timeout"]) + LAUNCHER_KILL_MARGIN_S
    assert int(args["--startup-timeout"]) <= startup["periodSeconds"] * startup["failureThreshold"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == PORTS
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[f"{REPOSITORY}/{CLASSIFIER}_model/config.pbtxt"]["subPath"] == f"{CLASSIFIER}_model.config.pbtxt"
    assert mounts["/dev/shm"]["name"] == "dshm" and restricted_violations(pod) == []
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
    assert r.exit_code == 1 and said(r, f"the plan's pipeline '{CLASSIFIER}' is not in --repository {tmp_path / 'empty-repo'}")
    assert not (tmp_path / "out").exists()


@pytest.mark.unit
def test_quantities_are_exact_or_rounded_down_in_milli_units():
    from tritonize.deploy.kubernetes import quantity

    assert quantity(250.0) == "250" and quantity(153.4567) == "153456m" and quantity(0.5) == "500m"
    for value in (250.0, 153.4567, 0.5, 1e-3):
        assert 0 <= value - milli(quantity(value)) < 1e-3


# -- the "restricted" Pod Security Standard ------------------------------------------------------------
# From https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline and restricted
# controls), pod and container level, plus the read-only root this project asks for.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(pod: dict) -> list[str]:
    """Every way a PodSpec breaks the restricted profile (an empty list: it is admitted), and a writable root."""
    bad = []
    psc = pod.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(f):
            bad.append(f"pod {f}")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']}: type {sorted(kinds - RESTRICTED_VOLUMES)}")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for s in psc.get("sysctls", []):
        if s["name"] not in SAFE_SYSCTLS:
            bad.append(f"pod sysctl {s['name']}")
    if (psc.get("seLinuxOptions") or {}).get("user") or (psc.get("seLinuxOptions") or {}).get("role"):
        bad.append("pod seLinuxOptions user/role")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        bad.append(f"pod seccompProfile {pod_seccomp}")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("pod hostProcess")
    containers = pod.get("initContainers", []) + pod.get("containers", []) + pod.get("ephemeralContainers", [])
    if not containers:
        bad.append("no containers")
    for c in containers:
        csc, name = c.get("securityContext") or {}, f"container {c.get('name')}"
        if csc.get("privileged"):
            bad.append(f"{name}: privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if not (csc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is not False)):
            bad.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if csc.get("runAsUser") == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container), got {seccomp}")
        if csc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount")
        if (csc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{name}: hostProcess")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        if csc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem must be true")
    return bad


@pytest.mark.unit
def test_the_restricted_check_catches_each_kind_of_breach():
    good = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                                             "readOnlyRootFilesystem": True}}],
            "volumes": [{"name": "t", "emptyDir": {}}]}
    assert restricted_violations(good) == []
    breaches = {
        "seccompProfile": lambda p: p["securityContext"].pop("seccompProfile"),
        "runAsNonRoot": lambda p: p["securityContext"].pop("runAsNonRoot"),
        "allowPrivilegeEscalation": lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "drop ALL": lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        "readOnlyRootFilesystem": lambda p: p["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
        "hostPath": lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "privileged": lambda p: p["containers"][0]["securityContext"].update(privileged=True),
        "hostNetwork": lambda p: p.update(hostNetwork=True),
    }
    for what, breach in breaches.items():
        pod = copy.deepcopy(good)
        breach(pod)
        assert restricted_violations(pod), what


# -- sizing from the plan's replica, on a plan and repository written here -------------------------------
def write_repository(repo: Path, name: str, kind: str = "KIND_CPU", quantized: bool = False) -> None:
    """A python-flavour pipeline's configs as a converter writes them: ensemble NAME (max_batch_size 64)
    over NAME_model (ONNX Runtime step, 64 rows per run, a thread per core), and its manifest."""
    step = mc.ModelConfig(name=f"{name}_model", backend="python", max_batch_size=64,
                          dynamic_batching=mc.ModelDynamicBatching(preferred_batch_size=[8, 32]),
                          instance_group=[mc.ModelInstanceGroup(count=1, kind=getattr(mc.ModelInstanceGroup, kind))])
    step.parameters["max_rows_per_run"].string_value = "64"
    step.parameters["intra_op_threads"].string_value = "0"
    ensemble = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=64)
    ensemble.ensemble_scheduling.step.add(model_name=f"{name}_model", model_version=-1)
    for config in (step, ensemble):
        (repo / config.name).mkdir(parents=True, exist_ok=True)
        (repo / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    report = {"name": name, "task": "embedding", "source": "sentence-transformers/all-MiniLM-L6-v2", "quantized": quantized}
    (repo / name / "tritonize.json").write_text(json.dumps({"key": "k", "report": report}))


def write_plan(path: Path, pipeline: str, replica: dict | None, repository: Path | None = None, threads: int = 1, **rec) -> Path:
    """A results.json as `plan` writes it: the recommendation (with `replica` unless None) and its variant."""
    system = f"triton {pipeline} (batch<=16, delay 0us, 1 inst, {threads} thr)"
    recommendation = {"system": system, "max_rps": 250.0, "replicas": 5, "headroom": 0.25, "target_rps": 1000, "slo_ms": 50,
                      "percentile": 95, "note": "", **({"replica": replica} if replica is not None else {}),
                      **({"repository": str(repository)} if repository else {}), **rec}
    variants = {system: {"model": pipeline, "max_batch_size": 16, "max_queue_delay_us": 0, "instances": 1, "threads": threads,
                         "dynamic_batching": True}}
    path.write_text(json.dumps({"points": [], "variants": variants, "recommendation": recommendation}))
    return path


CPU_REPLICA = {"cores": 1, "cpus": "0", "ort_threads": 1, "instances": 1, "device": "cpu", "memory_mib": 800.0}


def pod_of(docs: dict) -> dict:
    return docs["deployment.yaml"]["spec"]["template"]["spec"]


@pytest.mark.unit
def test_a_cpu_plan_asks_for_its_replicas_cores_and_measured_memory_and_no_gpu(tmp_path):
    repo = tmp_path / "repo"
    write_repository(repo, "mini")
    r = deploy(write_plan(tmp_path / "results.json", "mini", CPU_REPLICA), tmp_path / "k8s", repo)
    assert r.exit_code == 0, r.output
    docs = documents(tmp_path / "k8s")
    for doc in docs.values():
        if doc["kind"] not in CUSTOM_RESOURCES:
            validate(doc)
    # the same check through the tool's own command line, as a user runs it
    files = [str(tmp_path / "k8s" / name) for name, doc in docs.items() if doc["kind"] not in CUSTOM_RESOURCES]
    cli = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "-k", KUBERNETES_VERSION, *files],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and cli.stdout.count(" passed for resource ") == len(files), cli.stdout + cli.stderr
    pod = pod_of(docs)
    (c,) = pod["containers"]
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "1", "memory": "1200Mi"}  # 800 MiB + 50%
    assert "tolerations" not in pod and restricted_violations(pod) == []
    assert said(r, "each pod: cpu 1, memory 1200Mi, no GPU (replica: 1 core(s), 1 instance(s) x 1 ONNX Runtime thread(s), cpu)")
    # the measured configs, both mounted: the step at Triton's max_batch_size 16 and its ensemble lowered to it
    data = docs["configmap.yaml"]["data"]
    step = text_format.Parse(data["mini_model.config.pbtxt"], mc.ModelConfig())
    assert step.max_batch_size == 16 and step.parameters["max_rows_per_run"].string_value == "16"
    assert step.parameters["intra_op_threads"].string_value == "1" and list(step.dynamic_batching.preferred_batch_size) == [8]
    assert text_format.Parse(data["mini.config.pbtxt"], mc.ModelConfig()).max_batch_size == 16
    mounts = {m["mountPath"]: m["subPath"] for m in c["volumeMounts"] if m["name"] == "model-config"}
    assert mounts == {f"{REPOSITORY}/mini_model/config.pbtxt": "mini_model.config.pbtxt", f"{REPOSITORY}/mini/config.pbtxt": "mini.config.pbtxt"}
    # a read-only root: every place the server writes is an emptyDir
    writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] != "model-config"}
    assert {"/tmp", "/dev/shm", "/var/log/tritonize", "/var/cache/tritonize/engines"} <= writable
    args = dict(zip(c["args"][::2], c["args"][1::2]))
    assert args["--log-file"].startswith("/var/log/tritonize/")
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]["medium"] == "Memory"
    assert json.loads(docs["deployment.yaml"]["metadata"]["annotations"]["tritonize.io/replica"])["cores"] == 1


@pytest.mark.unit
def test_a_gpu_plan_gets_a_gpu_and_its_toleration_and_options_override_the_sizes(tmp_path):
    repo = tmp_path / "repo"
    write_repository(repo, "mini", kind="KIND_GPU")
    plan = write_plan(tmp_path / "results.json", "mini", {**CPU_REPLICA, "device": "gpu", "cores": 4, "cpus": None, "memory_mib": 300})
    r = deploy(plan, tmp_path / "k8s", repo)
    assert r.exit_code == 0, r.output
    pod = pod_of(documents(tmp_path / "k8s"))
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "512Mi", "nvidia.com/gpu": 1}  # 450 MiB is under the floor
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    r = deploy(plan, tmp_path / "k8s-2", repo, "--cpu", "2500m", "--memory", "3Gi", "--gpus", "2")
    assert r.exit_code == 0, r.output
    (c,) = pod_of(documents(tmp_path / "k8s-2"))["containers"]
    assert c["resources"]["limits"] == {"cpu": "2500m", "memory": "3Gi", "nvidia.com/gpu": 2}
    r = deploy(plan, tmp_path / "k8s-3", repo, "--kind", "kserve")
    assert r.exit_code == 0, r.output
    predictor = documents(tmp_path / "k8s-3")["inferenceservice.yaml"]["spec"]["predictor"]
    assert predictor["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1 and predictor["tolerations"]
    pod_fields = {k: v for k, v in predictor.items() if k not in {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}}
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_fields})
    assert restricted_violations(pod_fields) == []


@pytest.mark.unit
@pytest.mark.parametrize("option, value, message", [
    ("--cpu", "two", "--cpu 'two': not a Kubernetes quantity"),
    ("--memory", "2 GB", "--memory '2 GB': not a Kubernetes quantity"),
    ("--memory", "0", "--memory '0': must be more than 0"),
])
def test_bad_size_options_are_refused_in_one_line(tmp_path, option, value, message):
    repo = tmp_path / "repo"
    write_repository(repo, "mini")
    r = deploy(write_plan(tmp_path / "results.json", "mini", CPU_REPLICA), tmp_path / "k8s", repo, option, value)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and len(lines) == 1 and message in lines[0], r.output
    assert not (tmp_path / "k8s").exists()


@pytest.mark.unit
def test_an_older_plan_without_a_replica_is_sized_from_its_settings_and_says_so(tmp_path):
    repo = tmp_path / "repo"
    write_repository(repo, "mini")
    r = deploy(write_plan(tmp_path / "results.json", "mini", None, threads=2), tmp_path / "k8s", repo)
    assert r.exit_code == 0, r.output
    (c,) = pod_of(documents(tmp_path / "k8s"))["containers"]
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert said(r, "the plan records no replica (an older plan): derived from its settings")
    assert said(r, "memory not measured, 2Gi assumed")
    write_repository(tmp_path / "gpu-repo", "mini", kind="KIND_GPU")  # an older plan's step on a GPU: asks for one
    r = deploy(write_plan(tmp_path / "results.json", "mini", None), tmp_path / "k8s-gpu", tmp_path / "gpu-repo")
    assert r.exit_code == 0 and pod_of(documents(tmp_path / "k8s-gpu"))["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.unit
def test_a_planned_model_the_image_lacks_is_refused_naming_how_to_build_it(tmp_path):
    """The plan chose mini-int8; the repository the image is built from (like CONVERT=demo) holds only mini."""
    planned, image_repo = tmp_path / "planned", tmp_path / "image-repo"
    write_repository(planned, "mini-int8", quantized=True)
    write_repository(image_repo, "mini")
    r = deploy(write_plan(tmp_path / "results.json", "mini-int8", CPU_REPLICA, repository=planned), tmp_path / "k8s", image_repo)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    assert "the plan's pipeline 'mini-int8' is not in --repository" in lines[0] and "(it holds: mini)" in lines[0]
    assert 'docker build --build-arg CONVERT="bert --model sentence-transformers/all-MiniLM-L6-v2 --quantize --name mini-int8"' in lines[0]
    assert not (tmp_path / "k8s").exists()


@pytest.mark.unit
def test_a_confirmation_travels_into_the_manifests(tmp_path):
    repo = tmp_path / "repo"
    write_repository(repo, "mini")
    confirmed = {"rate_rps": 250.0, "achieved_rps": 244.0, "p95_ms": 71.0, "met": False}
    r = deploy(write_plan(tmp_path / "results.json", "mini", CPU_REPLICA, confirmed=confirmed), tmp_path / "k8s", repo)
    assert r.exit_code == 0, r.output
    note = documents(tmp_path / "k8s")["deployment.yaml"]["metadata"]["annotations"]["tritonize.io/confirmation"]
    assert "met False" in note and "p95_ms 71" in note and said(r, "confirmation: rate_rps 250")
