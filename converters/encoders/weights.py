"""BERT-family encoders for the PyTorch engine (`tritonize convert bert --device cpu|cuda`): the same
ensemble as the ONNX flavour, with the model step loading the checkpoint's stored weights instead of
an ONNX graph. No export: the check is that the stored copy, reloaded the way the step loads it,
gives PyTorch's outputs on the same validation batches and tolerance as the ONNX path. The served
engine's own parity (buckets, SDPA, dtypes) is what the tests and benchmarks/gpu_check.py measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tritonize.converters.base import Conversion, ParityError
from tritonize.converters.checkpoints import resolve, served_name
from tritonize.converters.device import Placement, save_weights
from tritonize.converters.encoders.architectures import check_architecture
from tritonize.converters.encoders.bert import (
    FP32_TOLERANCE, TASKS, ConversionReport, compare, max_sequence_length, read_embedding, torch_reference, validation_batches,
)
from tritonize.converters.encoders.st_modules import with_prompt_length
from tritonize.converters.encoders.st_parity import check as check_embedding_parity, sentence_transformers_parity
from tritonize.converters.encoders.repository import encoder_pipeline, write_encoder_pipeline
from tritonize.converters.repository import Batching


@dataclass
class TorchConversionReport(ConversionReport):
    engine: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"


class BertWeightsConversion(Conversion[TorchConversionReport]):
    family, report_type, tolerance = "encoders", TorchConversionReport, FP32_TOLERANCE

    def __init__(self, model: str, task: str, repository: Path, name: str | None, placement: Placement, batching: Batching,
                 tolerance: float, force: bool, log: Callable[[str], None]):
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, not {task!r}")
        placement.check_torch("convert_bert_torch", "convert_bert")  # before any work
        super().__init__(served_name(model, name), resolve(model), repository, force, log, tolerance)
        self.model, self.task, self.placement, self.batching = model, task, placement, batching

    def options(self) -> dict:
        return {"task": self.task, "flavour": "python", "batching": asdict(self.batching), **self.placement.options()}

    def export(self, tmp: Path) -> None:
        """No export: the checkpoint's weights, stored as the step loads them."""
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.modules, source = read_embedding(self.model, self.source, self.task)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{self.model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
        self.config = AutoConfig.from_pretrained(source)
        check_architecture(self.config, self.task)
        self.modules = with_prompt_length(self.modules, self.tokenizer)
        self.max_length = min(max_sequence_length(self.tokenizer, self.config, source), self.modules.max_seq_length or 1 << 30)
        cls = AutoModel if self.task == "embedding" else AutoModelForSequenceClassification
        self.reference = cls.from_pretrained(source).eval()
        self.tmp = tmp
        self.log(f"{self.name}: storing {self.model} for the PyTorch engine ({self.placement.device}, {self.placement.dtype})")
        self.weights = save_weights(self.reference, self.tokenizer, tmp / "torch")
        self.stored = cls.from_pretrained(str(tmp / "torch"), local_files_only=True).eval()

    def parity(self) -> None:
        """The stored copy, reloaded the way the step loads it, against the checkpoint."""
        self.err = 0.0
        for batch in validation_batches(self.max_length):
            ref, mask = torch_reference(self.reference, self.tokenizer, batch, self.task, self.max_length)
            got, _ = torch_reference(self.stored, self.tokenizer, batch, self.task, self.max_length)
            self.err = max(self.err, compare(got, ref, mask, self.task))
        self.log(f"{self.name}: stored weights vs PyTorch: max abs error {self.err:.2e} (tolerance {self.tolerance:.0e})")
        if not self.err <= self.tolerance:
            raise ParityError(f"{self.name}: the stored weights give outputs {self.err:.3e} away from PyTorch > tolerance {self.tolerance:.0e}")
        self.st_parity = None
        if self.task == "embedding":
            self.log(f"{self.name}: embedding: {self.modules.describe()}")
        if self.task == "embedding" and self.modules.sentence_transformers:  # the stored model's hidden states + the served head
            hidden = lambda texts: torch_reference(self.stored, self.tokenizer, texts, "embedding", self.max_length)
            self.st_parity = sentence_transformers_parity(self.source, hidden, self.modules, validation_batches(self.max_length), self.log, self.name)
            if self.st_parity is not None:
                self.log(f"{self.name}: served embeddings vs SentenceTransformer.encode: min cosine {self.st_parity.min_cosine:.7f}, "
                         f"max relative norm error {self.st_parity.max_norm_error:.1e}")
                check_embedding_parity(self.st_parity, self.name)

    def report(self) -> TorchConversionReport:
        return TorchConversionReport(
            name=self.name, task=self.task, source=str(self.model), repository=str(self.repository), reused=False, max_abs_error=self.err,
            tolerance=self.tolerance, optimized=False, quantized=False, seconds=self.seconds(), device=self.placement.device or "cpu",
            dtype=self.placement.dtype, embedding=self.modules.describe() if self.task == "embedding" else "",
            st_min_cosine=self.st_parity.min_cosine if self.st_parity else None,
            st_max_norm_error=self.st_parity.max_norm_error if self.st_parity else None,
        )

    def write(self, report: TorchConversionReport) -> dict:
        self.tokenizer.backend_tokenizer.save(str(self.tmp / "tokenizer.json"))
        pipeline = encoder_pipeline(self.name, self.task, self.config, self.tokenizer, self.max_length, self.batching,
                                    device=self.placement.device, dtype=self.placement.dtype, flavour="python", modules=self.modules)
        return write_encoder_pipeline(self.repository, pipeline, None, self.tmp / "tokenizer.json", weights=self.weights,
                                      dense=self.modules.dense)

    def written(self, report: TorchConversionReport) -> str:
        return f"{self.name}: wrote {self.repository / self.name} and its steps (PyTorch engine) in {report.seconds:.0f} s"


def convert_bert_torch(
    model: str,
    task: str = "embedding",
    repository: Path = Path("model_repository"),
    name: str | None = None,
    placement: Placement = Placement("cpu"),
    batching: Batching | None = None,
    tolerance: float = FP32_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> TorchConversionReport:
    return BertWeightsConversion(model, task, Path(repository), name, placement, batching or Batching(), tolerance, force, log).run()
