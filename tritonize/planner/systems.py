"""Systems under test, started the same way for every comparison (and pinned to the same cores).

- `TritonVariant`: a pipeline from a model repository, with the model step's batching settings
  overridden in a scratch copy of its configs (engine files are symlinked, not copied);
- `FastApiBaseline`: tritonize/planner/fastapi_baseline.py under uvicorn;
- `ViaGateway`: any Triton system above, called through `tritonize gateway` (the OpenAI API) started
  in front of it as its own process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonize.contract.chat import CALLS_PARAMETER
from tritonize.contract.model_config import read_config
from tritonize.contract.model_config import engine_model
from tritonize.server import ServerConfig, TritonServer
from tritonize.server.launcher import free_port
from tritonize.server.memory import with_huge_pages


@dataclass(frozen=True)
class Variant:
    """Server-side knobs the planner sweeps; None keeps what the repository has."""

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    instances: int | None = None
    threads: int | None = None
    dynamic_batching: bool = True

    @property
    def label(self) -> str:
        if not self.dynamic_batching:
            return "batching off"
        short = {"max_batch_size": "batch<={}", "max_queue_delay_us": "delay {}us", "instances": "{} inst", "threads": "{} thr"}
        parts = [short[k].format(v) for k, v in asdict(self).items() if v is not None and k in short]
        return ", ".join(parts) or "as converted"


def pipeline_models(repo: Path, ensemble: str) -> list[str]:
    """The models a pipeline needs: an ensemble's steps; for a BLS model (a chatbot, which names what it
    calls in `tritonize_calls`) its streaming twin and the pipelines it calls."""
    config = read_config(repo / ensemble / "config.pbtxt")
    models = [ensemble] + [s.model_name for s in config.ensemble_scheduling.step]
    if CALLS_PARAMETER in config.parameters:
        if (repo / f"{ensemble}_stream").is_dir():
            models.append(f"{ensemble}_stream")
        for callee in json.loads(config.parameters[CALLS_PARAMETER].string_value):
            models += [m for m in pipeline_models(repo, callee) if m not in models]
    return models


def apply_variant(config: mc.ModelConfig, v: Variant) -> mc.ModelConfig:
    """The model step's config with the variant's settings. `max_batch_size` is Triton's own (the most
    rows the dynamic batcher puts in one execution, as Model Analyzer sets it); the step's
    `max_rows_per_run` and preferred batch sizes follow it."""
    c = mc.ModelConfig()
    c.CopyFrom(config)
    if not v.dynamic_batching:
        c.ClearField("dynamic_batching")  # Triton then runs every request on its own
    if v.max_queue_delay_us is not None and c.HasField("dynamic_batching"):
        c.dynamic_batching.max_queue_delay_microseconds = v.max_queue_delay_us
    if v.max_batch_size is not None and c.max_batch_size > 0:
        c.max_batch_size = v.max_batch_size
        if c.HasField("dynamic_batching"):
            kept = [b for b in c.dynamic_batching.preferred_batch_size if b <= v.max_batch_size]
            del c.dynamic_batching.preferred_batch_size[:]
            c.dynamic_batching.preferred_batch_size.extend(kept)
    if v.max_batch_size is not None and "max_rows_per_run" in c.parameters:
        c.parameters["max_rows_per_run"].string_value = str(v.max_batch_size)
    if v.instances is not None:
        c.instance_group[0].count = v.instances
    if v.threads is not None and "intra_op_threads" in c.parameters:
        c.parameters["intra_op_threads"].string_value = str(v.threads)
    return c


def variant_configs(repo: Path, ensemble: str, v: Variant) -> dict[str, mc.ModelConfig]:
    """The configs a variant changes, by model: the model step's, and an ensemble's whose max_batch_size
    would exceed its step's (Triton refuses an ensemble that allows more rows than a step it runs)."""
    engine = engine_model(repo, ensemble)
    changed = {engine: apply_variant(read_config(repo / engine / "config.pbtxt"), v)} if engine else {}
    top = changed[engine].max_batch_size if engine else 0
    if ensemble != engine and top > 0:
        config = read_config(repo / ensemble / "config.pbtxt")
        if config.platform == "ensemble" and config.max_batch_size > top:
            config.max_batch_size = top
            changed[ensemble] = config
    return changed


def write_variant(repo: Path, ensemble: str, v: Variant, scratch: Path) -> Path:
    """A scratch repository holding only this pipeline, its configs changed by the variant."""
    shutil.rmtree(scratch, ignore_errors=True)
    changed = variant_configs(repo, ensemble, v)
    for name in pipeline_models(repo, ensemble):
        src, dst = (repo / name).resolve(), scratch / name
        for f in src.rglob("*"):
            if f.is_file() and f.name != "config.pbtxt":
                (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f, dst / f.relative_to(src))
        (dst / "1").mkdir(parents=True, exist_ok=True)
        config = changed.get(name) or read_config(src / "config.pbtxt")
        (dst / "config.pbtxt").write_text(text_format.MessageToString(config))
    return scratch


def write_back(repo: Path, ensemble: str, v: Variant) -> Path:
    """Apply the chosen variant to the repository itself (`tritonize plan --apply`); returns the model
    step's config path."""
    changed = variant_configs(repo, ensemble, v)
    for name, config in changed.items():
        (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return repo / engine_model(repo, ensemble) / "config.pbtxt"


class TritonVariant:
    user = "grpc"

    def __init__(self, repo: Path, ensemble: str, variant: Variant, scratch: Path, cpus: str | None = None,
                 copy_of: str | None = None, huge_pages: bool = True):
        self.repo, self.ensemble, self.variant, self.scratch, self.cpus = repo, ensemble, variant, scratch, cpus
        self.huge_pages = huge_pages  # ServerConfig.huge_pages (server/memory.py)
        self.model = ensemble
        self.engine = engine_model(repo, ensemble)  # whose Triton statistics show the engine's batches
        self.name = f"triton {ensemble} ({variant.label}{', A/A copy' if copy_of else ''})"
        self.copy_of = copy_of  # a second server of the same config (the A/A control): the name of the first
        self.server: TritonServer | None = None

    def start(self) -> str:
        write_variant(self.repo, self.ensemble, self.variant, self.scratch)
        extra = []
        self.server = TritonServer(ServerConfig(self.scratch, http_port=0, grpc_port=0, metrics_port=0,
                                                log_file=self.scratch.parent / f"{self.scratch.name}.log",
                                                extra_args=extra, cpus=self.cpus, huge_pages=self.huge_pages))
        self.server.start()
        return self.server.grpc_url

    @property
    def stats_urls(self) -> tuple[str | None, str | None]:
        return (self.server.http_url, self.server.metrics_url) if self.server else (None, None)

    def stop(self) -> None:
        if self.server:
            self.server.stop()


class FastApiBaseline:
    user = "fastapi"
    name = "FastAPI + PyTorch"
    stats_urls = (None, None)
    TASKS = ("embed", "classify")  # the scenario pipelines it serves (tritonize/planner/fastapi_baseline.py)

    def __init__(self, model: str, cpus: str | None = None, threads: int = 1, task: str = "embed"):
        self.model, self.cpus, self.threads, self.task = model, cpus, threads, task  # one of TASKS
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120) -> str:
        port = free_port()
        # The allocator the served steps get (server/memory.py), so the comparison is the serving stack.
        env = {**with_huge_pages(os.environ), "TRITONIZE_BASELINE_MODEL": self.model, "TRITONIZE_BASELINE_THREADS": str(self.threads),
               "TRITONIZE_BASELINE_TASK": self.task}
        cmd = [sys.executable, "-m", "uvicorn", "tritonize.planner.fastapi_baseline:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        self.proc = subprocess.Popen((["taskset", "-c", self.cpus] if self.cpus else []) + cmd, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the FastAPI baseline exited with code {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                return url
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the FastAPI baseline was not up after {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _wait_http(proc: subprocess.Popen, url: str, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} was not up after {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class ViaGateway:
    """Locust calls the OpenAI-compatible gateway, which calls the wrapped system's Triton over gRPC."""

    user = "openai"

    def __init__(self, inner, cpus: str | None = None):
        self.inner, self.cpus = inner, cpus
        if hasattr(inner, "model"):  # the pipeline the sweep names in the scenario (else the scenario's own)
            self.model = inner.model
        self.name = f"{inner.name} via OpenAI gateway"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> str:
        grpc_url = self.inner.start()
        port = free_port()
        cmd = [sys.executable, "-m", "tritonize", "gateway", "--url", grpc_url, "--port", str(port)]
        self.proc = subprocess.Popen((["taskset", "-c", self.cpus] if self.cpus else []) + cmd, stdout=subprocess.DEVNULL,
                                     start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(self.proc, url, "the gateway", timeout_s)
        except BaseException:
            self.stop()
            raise
        return url

    @property
    def stats_urls(self) -> tuple[str | None, str | None]:
        return self.inner.stats_urls

    def stop(self) -> None:
        _stop(self.proc)
        self.inner.stop()


def replica_of(system: TritonVariant, memory_mib: float | None) -> dict:
    """What one replica of a measured configuration is (`recommendation.replica`): the cores its server
    ran on (`cpus`: the pinning, or None), ONNX Runtime threads and instances of its engine step (as
    served: the variant's, else the repository's), the device, and the peak RSS of the server's
    process group under load (MiB)."""
    from tritonize.planner.inputs import cpu_list

    config = read_config(system.scratch / system.engine / "config.pbtxt")
    threads = int(config.parameters["intra_op_threads"].string_value) if "intra_op_threads" in config.parameters else 0
    groups = list(config.instance_group)
    instances = sum(g.count or 1 for g in groups) or 1
    cores = len(cpu_list(system.cpus)) if system.cpus else (os.cpu_count() or 1)
    device = "gpu" if any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in groups) else "cpu"
    return {"cores": cores, "cpus": system.cpus, "ort_threads": threads or cores, "instances": instances, "device": device,
            "memory_mib": round(memory_mib, 1) if memory_mib else None}
