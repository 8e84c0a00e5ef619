"""BERT-family encoders for the PyTorch engine (`tritonize convert bert --device cpu|cuda`): the same
ensemble as the ONNX flavour, with the model step loading the checkpoint's stored weights instead of
an ONNX graph. No export: the check is that the stored copy, reloaded the way the step loads it,
gives PyTorch's outputs on the same validation batches and tolerance as the ONNX path. The served
engine's own parity (buckets, SDPA, dtypes) is what the tests and benchmarks/gpu_check.py measure.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tritonize.converters.checkpoints import fingerprint, resolve, served_name
from tritonize.converters.device import Placement, save_weights
from tritonize.converters.encoders.bert import (
    FP32_TOLERANCE, TASKS, ConversionReport, ParityError, compare, max_sequence_length, torch_reference, validation_batches,
)
from tritonize.converters.encoders.repository import EncoderPipeline, write_encoder_pipeline
from tritonize.converters.repository import Batching, read_manifest


@dataclass
class TorchConversionReport(ConversionReport):
    engine: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"


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
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, not {task!r}")
    if not placement.torch:
        raise ValueError("convert_bert_torch needs a device (cpu or cuda); convert_bert writes the ONNX flavour")
    placement.check_available()  # before any work
    started = time.monotonic()
    source, name, repository = resolve(model), served_name(model, name), Path(repository)
    batching = batching or Batching()
    key = fingerprint(source, {"task": task, "flavour": "python", "batching": asdict(batching), **placement.options()}, "encoders")
    previous = read_manifest(repository, name)
    if previous and previous.get("key") == key and not force:
        log(f"{name}: reusing {repository / name} (same source and options)")
        return TorchConversionReport(**previous["report"], reused=True)

    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise ValueError(f"{model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
    config = AutoConfig.from_pretrained(source)
    max_length = max_sequence_length(tokenizer, config, source)
    cls = AutoModel if task == "embedding" else AutoModelForSequenceClassification
    reference = cls.from_pretrained(source).eval()

    with tempfile.TemporaryDirectory(prefix="tritonize-bert-torch-") as tmp:
        tmp = Path(tmp)
        log(f"{name}: storing {model} for the PyTorch engine ({placement.device}, {placement.dtype})")
        weights = save_weights(reference, tokenizer, tmp / "torch")
        stored = cls.from_pretrained(str(tmp / "torch"), local_files_only=True).eval()
        err = 0.0
        for batch in validation_batches(max_length):
            ref, mask = torch_reference(reference, tokenizer, batch, task, max_length)
            got, _ = torch_reference(stored, tokenizer, batch, task, max_length)
            err = max(err, compare(got, ref, mask, task))
        log(f"{name}: stored weights vs PyTorch: max abs error {err:.2e} (tolerance {tolerance:.0e})")
        if not err <= tolerance:
            raise ParityError(f"{name}: the stored weights give outputs {err:.3e} away from PyTorch > tolerance {tolerance:.0e}")
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        pipeline = EncoderPipeline(
            name=name, task=task, hidden_size=getattr(config, "hidden_size", getattr(config, "dim", 0)), max_length=max_length,
            pad_token_id=tokenizer.pad_token_id or 0,
            labels=[config.id2label[i] for i in range(config.num_labels)] if task == "classification" else [],
            batching=batching, device=placement.device, dtype=placement.dtype, flavour="python",
        )
        report = TorchConversionReport(
            name=name, task=task, source=str(model), repository=str(repository), reused=False, max_abs_error=err, tolerance=tolerance,
            optimized=False, quantized=False, seconds=round(time.monotonic() - started, 1), device=placement.device, dtype=placement.dtype,
        )
        manifest = {"key": key, "report": {k: v for k, v in asdict(report).items() if k != "reused"}}
        write_encoder_pipeline(repository, pipeline, None, tmp / "tokenizer.json", manifest, weights=weights)
    log(f"{name}: wrote {repository / name} and its steps (PyTorch engine) in {report.seconds:.0f} s")
    return report
