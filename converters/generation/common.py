"""What the GPT-2 and T5 converters share: the served generator's config, reuse of a previous
conversion, and the report.

A generator is one decoupled Python-backend model (no ensemble): its graphs, its tokenizer.json and a
one-line shim that imports `tritonize.runtime.generation.step:GenerationStep`. Limits and defaults are config
parameters, so an operator changes them in config.pbtxt without converting again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from tritonize.converters.device import Placement
from tritonize.converters.repository import read_manifest, shim, tensor_in, tensor_out, with_parameters, write_model

STEP = "tritonize.runtime.generation.step:GenerationStep"
# Max abs logits error allowed between ONNX Runtime fp32 and PyTorch, relative to the largest logit.
# fp32 rounding grows with the activations: tiny random models with scaled initialisation are badly
# conditioned (the tiny T5 measured 1e-5 to 3e-5 relative, varying run to run with thread scheduling).
LOGITS_TOLERANCE = 1e-3
VALIDATION_PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "Triton batches requests of different lengths together when a step allows it, and streams tokens back.",
]


class ParityError(RuntimeError):
    pass


@dataclass
class GenerationLimits:
    """Served limits (see tritonize.runtime.generation.params.Limits); 0 means: derive from the model."""

    max_new_tokens: int = 512  # the most a request may ask for (capped by the context for GPT-2)
    default_max_new_tokens: int = 32
    max_sequences: int = 16
    max_queue: int = 64
    max_prompt_bytes: int = 100_000
    intra_op_threads: int = 0  # ONNX Runtime threads (0: one per core)
    max_prefill_tokens: int = 2048  # rows x padded length of one prefill forward (1: every prompt alone)


@dataclass
class GenerationReport:
    name: str
    family: str
    source: str
    repository: str
    reused: bool
    max_abs_error_first_step: float
    max_abs_error_cached_step: float
    tolerance: float  # relative to logits_scale
    logits_scale: float  # the largest |logit| of the PyTorch reference
    max_context: int
    limits: dict = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = "onnx"  # onnx | torch (then on device, in dtype)
    device: str = "cpu"
    dtype: str = "float32"


def previous_report(repository: Path, name: str, key: str) -> GenerationReport | None:
    previous = read_manifest(repository, name)
    if previous and previous.get("key") == key:
        return GenerationReport(**previous["report"], reused=True)
    return None


def check_parity(name: str, first: float, cached: float, scale: float, tolerance: float, log) -> None:
    allowed = tolerance * max(1.0, scale)
    log(f"{name}: max abs logits error vs PyTorch: first step {first:.2e}, cached step {cached:.2e} "
        f"(largest logit {scale:.1f}, allowed {allowed:.1e})")
    if not max(first, cached) <= allowed:
        raise ParityError(f"{name}: ONNX logits differ from PyTorch by {max(first, cached):.3e} > {allowed:.1e} "
                          f"({tolerance:.0e} x largest logit {scale:.1f})")


def generator_config(name: str, params: dict[str, object]) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,  # the engine batches across requests itself (continuous batching)
        input=[tensor_in("TEXT", "BYTES", [1])],
        output=[tensor_out("TEXT", "BYTES", [1]), tensor_out("TOKEN_IDS", "INT64", [-1]), tensor_out("FINISH_REASON", "BYTES", [1]),
                tensor_out("PROMPT_TOKENS", "INT64", [1])],
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True),
        instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
    )
    return with_parameters(config, {k: v if isinstance(v, str) else str(v) for k, v in params.items()})


def served_parameters(family: str, max_context: int, limits: GenerationLimits, eos: int | None, start: int | None) -> dict:
    max_new = min(limits.max_new_tokens, max_context - 1) if family == "decoder" else limits.max_new_tokens
    return {
        "task": "generation",
        "family": family,
        "max_context": max_context,
        "max_new_tokens": max_new,
        "default_max_new_tokens": min(limits.default_max_new_tokens, max_new),
        "max_sequences": limits.max_sequences,
        "max_queue": limits.max_queue,
        "max_prompt_bytes": limits.max_prompt_bytes,
        "intra_op_threads": limits.intra_op_threads,
        "max_prefill_tokens": limits.max_prefill_tokens,
        "eos_token_id": "" if eos is None else eos,
        "decoder_start_token_id": "" if start is None else start,
    }


def chat_parameters(tokenizer) -> dict[str, str]:
    """The checkpoint's chat template and the special tokens it refers to, for the OpenAI gateway
    (which renders chat messages into a prompt); empty when the checkpoint has none."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default", "")
    return {"chat_template": template, "bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}


def write_generator(repository: Path, name: str, params: dict, files: dict[str, Path], report: GenerationReport, key: str,
                    placement: Placement = Placement()) -> Path:
    """The model folder; the manifest goes last, so it marks a complete write."""
    config = generator_config(name, params)
    if placement.torch:
        placement.place(config)
    folder = write_model(repository, config, {"model.py": shim(STEP), **files})
    manifest = {"key": key, "report": {k: v for k, v in asdict(report).items() if k != "reused"}}
    (folder / "tritonize.json").write_text(json.dumps(manifest, indent=2))
    return folder
