"""What the GPT-2 and T5 converters share (both engines): the served generator's config, the report, the
parity check and the conversion sequence's generation half.

A generator is one decoupled Python-backend model (no ensemble): its graphs (or stored weights), its
tokenizer.json and a one-line shim that imports `tritonize.runtime.generation.step:GenerationStep`.
Limits and defaults are config parameters (tritonize.contract.generation), so an operator changes them
in config.pbtxt without converting again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tritonclient.grpc import model_config_pb2 as mc

from tritonize.contract.generation import ChatTemplate, Generator
from tritonize.contract.generation import Limits
from tritonize.converters.base import Conversion, ParityError
from tritonize.converters.checkpoints import resolve, served_name
from tritonize.converters.device import Placement
from tritonize.converters.repository import shim, tensor_in, tensor_out, with_parameters, write_model
from tritonize.families import GENERATION

STEP = GENERATION.runtime.served["model"]
# Max abs logits error allowed between ONNX Runtime fp32 and PyTorch, relative to the largest logit.
# fp32 rounding grows with the activations: tiny random models with scaled initialisation are badly
# conditioned (the tiny T5 measured 1e-5 to 3e-5 relative, varying run to run with thread scheduling).
LOGITS_TOLERANCE = 1e-3
VALIDATION_PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "Triton batches requests of different lengths together when a step allows it, and streams tokens back.",
]


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
    limits: dict = field(default_factory=dict)  # the served parameters
    seconds: float = 0.0
    engine: str = "onnx"  # onnx | torch (then on device, in dtype)
    device: str = "cpu"
    dtype: str = "float32"


def check_parity(name: str, first: float, cached: float, scale: float, tolerance: float, log) -> None:
    allowed = tolerance * max(1.0, scale)
    log(f"{name}: max abs logits error vs PyTorch: first step {first:.2e}, cached step {cached:.2e} "
        f"(largest logit {scale:.1f}, allowed {allowed:.1e})")
    if not max(first, cached) <= allowed:
        raise ParityError(f"{name}: ONNX logits differ from PyTorch by {max(first, cached):.3e} > {allowed:.1e} "
                          f"({tolerance:.0e} x largest logit {scale:.1f})")


def generator_config(name: str, generator: Generator) -> mc.ModelConfig:
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
    return with_parameters(config, generator.to_params())


def chat_template(tokenizer) -> ChatTemplate:
    """The checkpoint's chat template (the default one of several named) and its special tokens."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = template.get("default", "")
    return ChatTemplate(template, tokenizer.bos_token or "", tokenizer.eos_token or "")


class GenerationConversion(Conversion[GenerationReport]):
    """GPT-2 or T5, either engine. A subclass's `export` loads the tokenizer and the reference, sets
    `max_context`, `eos`, `start` (T5's decoder start), `files` (what the version folder holds) and its
    `parity` sets `errors` (first step, cached step, largest logit)."""

    family, report_type, tolerance = "generation", GenerationReport, LOGITS_TOLERANCE
    model_family: str  # gpt2 | t5
    placement = Placement()
    with_chat_template = True  # the gateway renders chat messages with it
    # set by `export`
    tmp: Path
    tokenizer: Any
    max_context: int
    eos: int | None
    files: dict[str, Path]

    def __init__(self, model: str, repository: Path, name: str | None, limits: Limits, tolerance: float, force: bool,
                 log: Callable[[str], None]):
        super().__init__(served_name(model, name), resolve(model), repository, force, log, tolerance)
        self.model, self.limits = model, limits
        self.start: int | None = None
        self.errors = (0.0, 0.0, 0.0)

    @classmethod
    def convert(cls, model: str, repository: Path = Path("model_repository"), name: str | None = None, limits: Limits | None = None,
                tolerance: float = LOGITS_TOLERANCE, force: bool = False, log: Callable[[str], None] = print) -> GenerationReport:
        """The family's entry point (`convert_gpt2`, `convert_t5`): convert, or reuse an identical conversion."""
        return cls(model, Path(repository), name, limits or Limits(), tolerance, force, log).run()

    def options(self) -> dict:
        return {"family": self.model_family, "limits": asdict(self.limits), **self.placement.options()}

    def generator(self) -> Generator:
        decoder = self.model_family == "gpt2"
        return Generator("decoder" if decoder else "encoder-decoder", self.limits.served(self.max_context, decoder), self.eos, self.start,
                         chat_template(self.tokenizer) if self.with_chat_template else None)

    def report(self) -> GenerationReport:
        first, cached, scale = self.errors
        p = self.placement
        return GenerationReport(
            name=self.name, family=self.model_family, source=str(self.model), repository=str(self.repository), reused=False,
            max_abs_error_first_step=first, max_abs_error_cached_step=cached, tolerance=self.tolerance, logits_scale=scale,
            max_context=self.max_context, limits=self.generator().to_params(), seconds=self.seconds(),
            engine=p.engine, device=p.device or "cpu", dtype=p.dtype,
        )

    def write(self, report: GenerationReport) -> dict:
        self.tokenizer.backend_tokenizer.save(str(self.tmp / "tokenizer.json"))
        config = generator_config(self.name, self.generator())
        if self.placement.torch:
            self.placement.place(config)
        write_model(self.repository, config, {"model.py": shim(STEP), **self.files, "tokenizer.json": self.tmp / "tokenizer.json"})
        return {}

    def written(self, report: GenerationReport) -> str:
        engine = " (PyTorch engine)" if self.placement.torch else ""
        return f"{self.name}: wrote {self.repository / self.name}{engine} in {report.seconds:.0f} s"
