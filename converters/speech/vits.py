"""VITS text-to-speech (Hugging Face `VitsModel`, the MMS-TTS architecture) -> one ONNX graph -> a
served Triton pipeline.

The graph takes a batch of character-id rows plus, per row, `seed`, `noise_scale`,
`noise_scale_duration` and `speaking_rate`, and returns waveforms and each row's true length in
samples. Noise comes from `tritonize.converters.speech.noise` (a function of the seed), so a fixed seed gives a
fixed waveform and the parity check compares against VitsModel's own forward pass in PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.converters.base import Conversion, ParityError
from tritonize.converters.checkpoints import resolve, served_name
from tritonize.converters.device import Placement
from tritonize.converters.speech.masking import padding_invariant
from tritonize.converters.speech.noise import seeded_noise
from tritonize.converters.speech.repository import SpeechLimits, SpeechPipeline, write_speech_pipeline
from tritonize.converters.repository import Batching
from tritonize.runtime.pooling import pad_vits_batch  # the served engine's padding

# Max abs difference of waveform samples (range about +-1), ONNX Runtime vs PyTorch, same noise.
WAVE_TOLERANCE = 1e-3  # -60 dB; measured 2e-5 on the tiny voice, 2.4e-4 at MMS-TTS size
PARITY_TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "a", "speech from triton"]


@dataclass
class TtsReport:
    name: str
    source: str
    repository: str
    reused: bool
    sampling_rate: int
    max_abs_error: float
    tolerance: float
    seconds: float = 0.0


def export_module(model):
    """A copy of the VitsModel that takes noise and rate as inputs and ignores padding (masking.py)."""
    import copy

    import torch

    class VitsWithNoiseInputs(torch.nn.Module):
        def __init__(self, vits):
            super().__init__()
            self.vits = vits

        def forward(self, input_ids, attention_mask, seed, noise_scale, noise_scale_duration, speaking_rate):
            v = self.vits
            # VitsModel reads these as scalars; per-row [batch, 1, 1] tensors broadcast the same way.
            v.noise_scale, v.noise_scale_duration = noise_scale.view(-1, 1, 1), noise_scale_duration.view(-1, 1, 1)
            v.speaking_rate = speaking_rate.view(-1, 1, 1)
            with seeded_noise(seed):
                out = v(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
            return out[0], out[1]

    return VitsWithNoiseInputs(padding_invariant(copy.deepcopy(model))).eval()


def torch_waveform(model, ids: list[int], seed: int, noise_scale: float, noise_scale_duration: float, speaking_rate: float) -> np.ndarray:
    """VitsModel's own forward, one row, the same noise: the reference for the served audio."""
    import torch

    model.noise_scale, model.noise_scale_duration, model.speaking_rate = noise_scale, noise_scale_duration, speaking_rate
    with torch.inference_mode(), seeded_noise(torch.tensor([seed])):
        wave, length = model(input_ids=torch.tensor([ids]), return_dict=False)[:2]
    return wave[0, : int(length[0])].numpy()


def export_onnx(model, path: Path) -> None:
    """The graph, with its 1-D Convs as unit-height 2-D ones (unit_height.py: ORT's fast CPU Conv kernels)
    and the elementwise ops between them kept 4-D (squeeze_sinking.py: Conv + LeakyRelu fused)."""
    import onnx
    import torch

    from tritonize.converters.speech.squeeze_sinking import sink_squeezes  # onnx only where a graph is exported
    from tritonize.converters.speech.unit_height import conv1d_as_conv2d

    ids = torch.tensor([[0, 5, 0, 7, 0, 9, 0], [0, 5, 0, 8, 0, 0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0, 0]])
    row = lambda v, dt=torch.float32: torch.tensor(v, dtype=dt)  # noqa: E731
    args = (ids, mask, row([1, 2], torch.int64), row([0.667, 0.5]), row([0.8, 0.6]), row([1.0, 1.2]))
    names = ["input_ids", "attention_mask", "seed", "noise_scale", "noise_scale_duration", "speaking_rate"]
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            **{n: {0: "batch"} for n in names[2:]}, "waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}}
    torch.onnx.export(export_module(model), args, str(path), input_names=names, output_names=["waveform", "lengths"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    graph = onnx.load(str(path))
    conv1d_as_conv2d(graph)
    sink_squeezes(graph)
    onnx.save(graph, str(path))


def frontend_spec(tokenizer, config) -> dict:
    """What the served front end needs from the checkpoint's tokenizer (no transformers at serve time)."""
    if getattr(tokenizer, "phonemize", False):
        raise ValueError("this voice's tokenizer phonemizes with espeak, which the served front end does not do")
    return {
        "vocab": tokenizer.encoder,
        "add_blank": bool(tokenizer.add_blank),
        "normalize": bool(tokenizer.normalize),
        "blank_id": 0,
        "unk_id": tokenizer.encoder.get(tokenizer.unk_token),
        "sampling_rate": int(config.sampling_rate),
        "defaults": {"noise_scale": float(config.noise_scale), "noise_scale_duration": float(config.noise_scale_duration),
                     "speaking_rate": float(config.speaking_rate)},
    }


def validate(model, tokenizer, session, min_tokens: int) -> float:
    """Max abs sample error, ORT (rows batched together) vs PyTorch (each row alone), same seeds.
    The batch is padded as the served engine pads it, never with the tokenizer's pad id, which may be
    an added token outside the embedding table."""
    ids, mask = pad_vits_batch([tokenizer(t)["input_ids"] for t in PARITY_TEXTS], min_tokens)
    enc = {"input_ids": ids, "attention_mask": mask}
    seeds = np.arange(len(PARITY_TEXTS), dtype=np.int64) + 7
    params = [(0.667, 0.8, 1.0), (0.3, 0.5, 1.3), (0.0, 0.0, 0.8), (1.0, 1.0, 1.0)]
    feeds = {
        "input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64), "seed": seeds,
        "noise_scale": np.array([p[0] for p in params], np.float32), "noise_scale_duration": np.array([p[1] for p in params], np.float32),
        "speaking_rate": np.array([p[2] for p in params], np.float32),
    }
    waves, lengths = session.run(None, feeds)
    worst = 0.0
    for i, (row, mask) in enumerate(zip(enc["input_ids"], enc["attention_mask"])):
        ref = torch_waveform(model, row[mask.astype(bool)].tolist(), int(seeds[i]), *params[i])
        if len(ref) != int(lengths[i]):
            raise ParityError(f"row {i}: ONNX audio is {int(lengths[i])} samples, PyTorch {len(ref)}")
        worst = max(worst, float(np.abs(waves[i, : len(ref)] - ref).max()))
    return worst


class VitsConversion(Conversion[TtsReport]):
    family, report_type, tolerance = "speech", TtsReport, WAVE_TOLERANCE
    placement = Placement()

    def __init__(self, model: str, repository: Path, name: str | None, batching: Batching, flavour: str, limits: SpeechLimits,
                 tolerance: float, force: bool, log: Callable[[str], None]):
        super().__init__(served_name(model, name), resolve(model), repository, force, log, tolerance)
        self.model, self.batching, self.flavour, self.limits = model, batching, flavour, limits
        self.onnx_path: Path | None = None
        self.weights: dict[str, Path] | None = None

    def options(self) -> dict:
        return {"flavour": self.flavour, "batching": asdict(self.batching), "limits": asdict(self.limits), **self.placement.options()}

    def load(self) -> None:
        from transformers import AutoTokenizer, VitsModel

        self.vits = VitsModel.from_pretrained(self.source).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.spec = frontend_spec(self.tokenizer, self.vits.config)
        # The traced relative attention is only right from window_size + 2 tokens on: pad up to that.
        self.min_tokens = int(getattr(self.vits.config, "window_size", 0) or 0) + 2

    def export(self, tmp: Path) -> None:
        import onnxruntime as ort

        self.load()
        self.onnx_path = tmp / "model.onnx"
        self.log(f"{self.name}: exporting VITS to ONNX (dynamic batch and text length, noise and rate as inputs)")
        export_onnx(self.vits, self.onnx_path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])

    def parity(self) -> None:
        self.err = validate(self.vits, self.tokenizer, self.session, self.min_tokens)
        self.log(f"{self.name}: max abs waveform error vs PyTorch {self.err:.2e} (tolerance {self.tolerance:.0e})")
        if not self.err <= self.tolerance:
            raise ParityError(f"{self.name}: ONNX waveform differs from PyTorch by {self.err:.3e} > {self.tolerance:.0e}")

    def report(self) -> TtsReport:
        return TtsReport(self.name, str(self.model), str(self.repository), False, self.spec["sampling_rate"], self.err, self.tolerance,
                         self.seconds())

    def pipeline(self) -> SpeechPipeline:
        return SpeechPipeline(name=self.name, sampling_rate=self.spec["sampling_rate"], batching=self.batching, limits=self.limits,
                              flavour=self.flavour, min_tokens=self.min_tokens)

    def write(self, report: TtsReport) -> dict:
        return write_speech_pipeline(self.repository, self.pipeline(), self.onnx_path, self.spec, weights=self.weights)

    def written(self, report: TtsReport) -> str:
        engine = ", PyTorch engine" if self.placement.torch else ""
        return f"{self.name}: wrote {self.repository / self.name} ({self.spec['sampling_rate']} Hz{engine}) in {report.seconds:.0f} s"


def convert_tts(
    model: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    batching: Batching | None = None,
    flavour: str = "python",
    limits: SpeechLimits | None = None,
    tolerance: float = WAVE_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> TtsReport:
    return VitsConversion(model, Path(repository), name, batching or Batching(max_batch_size=16), flavour, limits or SpeechLimits(),
                          tolerance, force, log).run()
