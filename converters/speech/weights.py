"""VITS voices for the PyTorch engine (`tritonize convert tts --device cpu|cuda`): the same speech
pipeline as the ONNX flavour, with the model and stream steps building VitsModel from the stored
config and weights (safetensors). The served engine reproduces the export's seeded noise and masked
vocoder (tritonize.runtime.speech.engine_torch). The check here: the stored copy, reloaded, gives
VitsModel's waveform for the same seeds on the same texts and tolerance as the ONNX path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, cast

import numpy as np

from tritonize.converters.base import ParityError
from tritonize.converters.device import Placement, save_weights
from tritonize.converters.repository import Batching
from tritonize.converters.speech.repository import SpeechLimits, SpeechPipeline
from tritonize.converters.speech.vits import PARITY_TEXTS, WAVE_TOLERANCE, TtsReport, VitsConversion, torch_waveform

GPU_MAX_PADDING_RATIO = 1.5  # rows of a GPU run may pad up to 1.5x their tokens (CPU: equal lengths only)


@dataclass
class TorchTtsReport(TtsReport):
    engine: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"


class VitsWeightsConversion(VitsConversion):
    report_type = TorchTtsReport

    def __init__(self, model: str, repository: Path, name: str | None, placement: Placement, batching: Batching, limits: SpeechLimits,
                 tolerance: float, force: bool, log: Callable[[str], None]):
        placement.check_torch("convert_tts_torch", "convert_tts")  # before any work
        self.placement = placement
        super().__init__(model, repository, name, batching, "python", limits, tolerance, force, log)

    def export(self, tmp: Path) -> None:
        """No export: the checkpoint's weights, stored as the steps load them."""
        from transformers import VitsModel

        self.load()  # min_tokens as the ONNX flavour pads (masked)
        self.log(f"{self.name}: storing VITS for the PyTorch engine ({self.placement.device}, {self.placement.dtype})")
        self.weights = save_weights(self.vits, self.tokenizer, tmp / "torch")
        self.stored = VitsModel.from_pretrained(str(tmp / "torch"), local_files_only=True).eval()

    def parity(self) -> None:
        """The stored copy, reloaded, against VitsModel for the same seeds."""
        self.err = 0.0
        for i, text in enumerate(PARITY_TEXTS):
            ids = self.tokenizer(text)["input_ids"]
            ref, got = (torch_waveform(m, ids, 7 + i, 0.667, 0.8, 1.0) for m in (self.vits, self.stored))
            if len(ref) != len(got):
                raise ParityError(f"{self.name}: the stored voice gives {len(got)} samples for {text!r}, PyTorch {len(ref)}")
            self.err = max(self.err, float(np.abs(got - ref).max()))
        self.log(f"{self.name}: stored weights vs PyTorch: max abs waveform error {self.err:.2e} (tolerance {self.tolerance:.0e})")
        if not self.err <= self.tolerance:
            raise ParityError(f"{self.name}: the stored voice differs from PyTorch by {self.err:.3e} > {self.tolerance:.0e}")

    def report(self) -> TorchTtsReport:
        return TorchTtsReport(self.name, str(self.model), str(self.repository), False, self.spec["sampling_rate"], self.err, self.tolerance,
                              self.seconds(), device=self.placement.device or "cpu", dtype=self.placement.dtype)

    def pipeline(self) -> SpeechPipeline:
        p = self.placement
        return SpeechPipeline(name=self.name, sampling_rate=self.spec["sampling_rate"], batching=self.batching, limits=self.limits,
                              min_tokens=self.min_tokens, device=p.device, dtype=p.dtype,
                              max_padding_ratio=GPU_MAX_PADDING_RATIO if p.device == "cuda" else 1.0)


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
    conversion = VitsWeightsConversion(model, Path(repository), name, placement, batching or Batching(max_batch_size=16),
                                       limits or SpeechLimits(), tolerance, force, log)
    return cast(TorchTtsReport, conversion.run())  # its report_type
