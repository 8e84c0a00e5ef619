"""TensorRT engines for an encoder's model step (`convert bert --flavour native --engine tensorrt`).

A plan is specific to one GPU model and one TensorRT version, so conversion (on CPU) writes only what a
build needs into the step's version folder: the ONNX graph and `tensorrt_build.json` (inputs, one
optimisation profile per length bucket, precision). The build runs where the engine runs:
`tritonize serve --engine-cache DIR` builds the missing plans on that machine's GPU before the server
starts, keyed by graph, profiles, TensorRT version and GPU, so a restart with the same cache reuses them.

fp16 lives in the graph (fp16 weights and math, fp32 inputs and outputs), built as a strongly typed
network: TensorRT 11 removed the builder's fp16 flag, and TensorRT 10 builds the same graph.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

SPEC_FILE = "tensorrt_build.json"
PLAN_FILE = "model.plan"
PRECISIONS = ("fp16", "fp32")


class EngineBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Profile:
    """(batch, tokens) shapes that every graph input of one optimisation profile accepts."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]


def length_buckets(max_length: int, first: int = 16) -> list[int]:
    """Upper token lengths of the buckets: doubling from `first`, the last one `max_length` (a last
    bucket narrower than half the one before it is merged into it)."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if first < 1:
        raise ValueError(f"first bucket must be >= 1 token, got {first}")
    edges, edge = [], first
    while edge < max_length:
        edges.append(edge)
        edge *= 2
    if edges and max_length - edges[-1] < edges[-1] / 2:
        edges.pop()
    return edges + [max_length]


def derive_profiles(max_length: int, max_batch_size: int, first: int = 16) -> list[Profile]:
    """One profile per length bucket, non-overlapping, so each padded shape has exactly one.

    min is one row of the bucket's shortest length; opt and max are a full batch at its longest: under
    load the dynamic batcher fills batches, and the native tokenizer pads requests to multiples of 16,
    so lengths sit at the bucket edges. Every profile takes the whole max_batch_size, because Triton
    may batch that many rows of any length.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 for a TensorRT step, got {max_batch_size}")
    profiles, lo = [], 1
    for hi in length_buckets(max_length, first):
        profiles.append(Profile((1, lo), (max_batch_size, hi), (max_batch_size, hi)))
        lo = hi + 1
    return profiles


@dataclass(frozen=True)
class BuildSpec:
    """What `build_engine` needs, saved beside the ONNX graph as tensorrt_build.json."""

    inputs: list[str]
    profiles: list[Profile]
    precision: str = "fp16"
    onnx: str = "model.onnx"
    plan: str = PLAN_FILE
    workspace_bytes: int = 1 << 30
    extra: dict = field(default_factory=dict)  # informational (max_length, bucket edges)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if not self.inputs or not self.profiles:
            raise ValueError("a TensorRT build needs at least one input and one profile")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, path: Path) -> "BuildSpec":
        raw = json.loads(Path(path).read_text())
        raw["profiles"] = [Profile(*(tuple(p[k]) for k in ("min", "opt", "max"))) for p in raw["profiles"]]
        return cls(**raw)


def to_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and math, fp32 inputs and outputs (ONNX Runtime's converter; CPU)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


# -- the build, on the GPU where the engine will run ----------------------------------------------------
def gpu_name() -> str | None:
    """The first GPU's name and compute capability, or None where there is no GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = r.stdout.strip().splitlines()
    return lines[0].strip() if r.returncode == 0 and lines else None


def builder_unavailable() -> str | None:
    """Why engines cannot be built here, or None when they can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the `tensorrt` Python package does not import (install the bindings matching the server's TensorRT)"
    if gpu_name() is None:
        return "no GPU is visible (nvidia-smi found none)"
    return None


def engine_key(onnx_path: Path, spec: BuildSpec, trt_version: str, gpu: str) -> str:
    h = hashlib.sha256()
    with open(onnx_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(spec.to_json().encode())
    h.update(f"{trt_version}|{gpu}".encode())
    return h.hexdigest()[:16]


def build_engine(onnx_path: Path, spec: BuildSpec, out: Path) -> Path:
    """Parse the ONNX graph, add one optimisation profile per bucket, serialise the plan to `out`."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    for p in spec.profiles:
        profile = builder.create_optimization_profile()
        for name in spec.inputs:
            profile.set_shape(name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(plan))
    tmp.rename(out)
    return out


def pending_engines(repository: Path) -> list[Path]:
    """Build specs in the repository whose plan is missing (or a link into a cache that is gone)."""
    specs = sorted(Path(repository).glob(f"*/*/{SPEC_FILE}"))
    return [s for s in specs if not (s.parent / BuildSpec.load(s).plan).exists()]


def prepare_engines(repository: Path, cache: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Build every missing plan into `cache` (once per graph, profiles, TensorRT and GPU) and link it into
    the repository. Returns the linked plans; a repository without TensorRT steps needs nothing."""
    todo = pending_engines(repository)
    if not todo:
        return []
    reason = builder_unavailable()
    if reason:
        models = ", ".join(sorted({s.parent.parent.name for s in todo}))
        raise EngineBuildError(f"{models}: a TensorRT engine must be built on this machine's GPU, but {reason}")
    import tensorrt as trt

    gpu = gpu_name() or "unknown"
    linked = []
    for spec_path in todo:
        spec, version = BuildSpec.load(spec_path), spec_path.parent
        model = version.parent.name
        cached = Path(cache) / model / engine_key(version / spec.onnx, spec, trt.__version__, gpu) / spec.plan
        if cached.exists():
            log(f"{model}: reusing the TensorRT engine {cached}")
        else:
            log(f"{model}: building a TensorRT {trt.__version__} engine for {gpu}, {len(spec.profiles)} profiles (minutes) ...")
            build_engine(version / spec.onnx, spec, cached)
        link = version / spec.plan
        if link.is_symlink():
            link.unlink()
        link.symlink_to(cached.resolve())
        linked.append(link)
    return linked
