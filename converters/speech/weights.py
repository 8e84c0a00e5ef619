"""VITS voices for the PyTorch engine (`tritonize convert tts --device cpu|cuda`): the same speech
pipeline as the ONNX flavour, with the model and stream steps building VitsModel from the stored
config and weights (safetensors). The served engine reproduces the export's seeded noise and masked
vocoder (tritonize.runtime.speech.engine_torch). The check here: the stored copy, reloaded, gives
VitsModel's waveform for the same seeds on the same texts and tolerance as the ONNX path.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.converters.checkpoints import fingerprint, resolve, served_name
from tritonize.converters.device import Placement, save_weights
from tritonize.converters.repository import Batching, read_manifest
from tritonize.converters.speech.repository import SpeechLimits, SpeechPipeline, write_speech_pipeline
from tritonize.converters.speech.vits import PARITY_TEXTS, WAVE_TOLERANCE, ParityError, TtsReport, frontend_spec, torch_waveform

GPU_MAX_PADDING_RATIO = 1.5  # rows of a GPU run may pad up to 1.5x their tokens (CPU: equal lengths only)


@dataclass
class TorchTtsReport(TtsReport):
    engine: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"


def convert_tts_torch(
    model: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    placement: Placement = Placement("cpu"),
    batching: Batching | None = None,
    limits: SpeechLimits | None = None,
    tolerance: float = WAVE_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> TorchTtsReport:
    if not placement.torch:
        raise ValueError("convert_tts_torch needs a device (cpu or cuda); convert_tts writes the ONNX flavour")
    placement.check_available()  # before any work
    started = time.monotonic()
    source, name, repository = resolve(model), served_name(model, name), Path(repository)
    batching, limits = batching or Batching(max_batch_size=16), limits or SpeechLimits()
    key = fingerprint(source, {"flavour": "python", "batching": asdict(batching), "limits": asdict(limits), **placement.options()}, "speech")
    previous = read_manifest(repository, name)
    if previous and previous.get("key") == key and not force:
        log(f"{name}: reusing {repository / name} (same source and options)")
        return TorchTtsReport(**previous["report"], reused=True)

    from transformers import AutoTokenizer, VitsModel

    reference = VitsModel.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    spec = frontend_spec(tokenizer, reference.config)
    with tempfile.TemporaryDirectory(prefix="tritonize-tts-torch-") as tmp:
        log(f"{name}: storing VITS for the PyTorch engine ({placement.device}, {placement.dtype})")
        weights = save_weights(reference, tokenizer, Path(tmp) / "torch")
        stored = VitsModel.from_pretrained(str(Path(tmp) / "torch"), local_files_only=True).eval()
        err = 0.0
        for i, text in enumerate(PARITY_TEXTS):
            ids = tokenizer(text)["input_ids"]
            ref, got = (torch_waveform(m, ids, 7 + i, 0.667, 0.8, 1.0) for m in (reference, stored))
            if len(ref) != len(got):
                raise ParityError(f"{name}: the stored voice gives {len(got)} samples for {text!r}, PyTorch {len(ref)}")
            err = max(err, float(np.abs(got - ref).max()))
        log(f"{name}: stored weights vs PyTorch: max abs waveform error {err:.2e} (tolerance {tolerance:.0e})")
        if not err <= tolerance:
            raise ParityError(f"{name}: the stored voice differs from PyTorch by {err:.3e} > {tolerance:.0e}")
        report = TorchTtsReport(name, str(model), str(repository), False, spec["sampling_rate"], err, tolerance,
                                round(time.monotonic() - started, 1), device=placement.device, dtype=placement.dtype)
        min_tokens = int(getattr(reference.config, "window_size", 0) or 0) + 2  # as the ONNX flavour pads (masked)
        pipeline = SpeechPipeline(name=name, sampling_rate=spec["sampling_rate"], batching=batching, limits=limits, min_tokens=min_tokens,
                                  device=placement.device, dtype=placement.dtype,
                                  max_padding_ratio=GPU_MAX_PADDING_RATIO if placement.device == "cuda" else 1.0)
        manifest = {"key": key, "report": {k: v for k, v in asdict(report).items() if k != "reused"}}
        write_speech_pipeline(repository, pipeline, None, spec, manifest, weights=weights)
    log(f"{name}: wrote {repository / name} ({spec['sampling_rate']} Hz, PyTorch engine) in {report.seconds:.0f} s")
    return report
