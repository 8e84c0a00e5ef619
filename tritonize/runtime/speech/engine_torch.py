"""The VITS engine on PyTorch (CUDA, or CPU for CI): the whole VitsModel, built by transformers from the
stored config and weights, with the two changes the ONNX export bakes into its graph, reproduced here
so both engines give the same waveform for the same seed:

- seeded noise: VITS draws noise twice (durations: `torch.randn`, latents: `torch.randn_like`); both
  draw from `hash_normal`, a pure function of (seed, stream, channel, position), the arithmetic of
  `tritonize.converters.speech.noise` (int64 hashing, then Box-Muller), computed on the device;
- padding invariance: every HiFi-GAN convolution's input is zeroed past the row's true length
  (`MaskedHifiGan` below, which the export runs too), so a sentence sounds the same alone or batched.

Patching `torch.randn` is process-wide, so one lock serialises synthesis (the streaming model runs one
thread per request); a GPU runs one batch at a time anyway.
"""

from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path

import numpy as np

# The shared module first: it sets the OpenMP wait policy before torch loads.
from tritonize.contract.engines import EngineSpec
from tritonize.contract.files import WEIGHTS
from tritonize.runtime.engine_torch import DTYPES, guard_oom, load_pretrained, resolve_device, to_numpy
import torch  # noqa: E402  (after the shared module, on purpose)
from torch import nn
from torch.nn import functional as F

from tritonize.runtime.pooling import pad_vits_batch
from tritonize.runtime.speech.voice import Voice

_M = 2147483647  # 2^31 - 1, as in converters/speech/noise.py
_POSITIONS = 1 << 22
_LOCK = threading.Lock()


def _uniform(index: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    h = (index * 48271 + seed * 69621 + 12345) % _M
    h = (h * 48271) % _M
    h = (h * 69621 + seed) % _M
    h = (h * 48271) % _M
    return (h.to(torch.float32) + 1.0) / (_M + 1.0)


def hash_normal(seed: torch.Tensor, channels: int, length: int, stream: int) -> torch.Tensor:
    """[batch, channels, length] float32 standard normal noise on seed's device, row b from seed[b] alone."""
    c = torch.arange(channels, dtype=torch.int64, device=seed.device).view(1, -1, 1)
    t = torch.arange(length, dtype=torch.int64, device=seed.device).view(1, 1, -1)
    index = ((stream * 1024 + c) * _POSITIONS + t) * 2
    s = (seed.to(torch.int64) % _M).view(-1, 1, 1)
    u1, u2 = _uniform(index, s), _uniform(index + 1, s)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


@contextlib.contextmanager
def seeded_noise(seed: torch.Tensor):
    real_randn, real_randn_like = torch.randn, torch.randn_like

    def randn(*size, **kwargs):
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return hash_normal(seed, size[1], size[2], stream=0)  # VITS moves it to the input's device and dtype

    def randn_like(x, **kwargs):
        return hash_normal(seed, x.shape[1], x.shape[2], stream=1).to(x.dtype)

    torch.randn, torch.randn_like = randn, randn_like
    try:
        yield
    finally:
        torch.randn, torch.randn_like = real_randn, real_randn_like


def frame_mask(lengths: torch.Tensor, width: int, scale: int, dtype: torch.dtype) -> torch.Tensor:
    """1 where a position (of a signal `scale` x the frames long) is inside its row, else 0."""
    positions = torch.arange(width, device=lengths.device).view(1, 1, -1)
    return (positions < (lengths * scale).view(-1, 1, 1)).to(dtype)


class FlowMaskTap(nn.Module):
    """VitsModel calls its flow with the output padding mask: remember each row's frames for the vocoder."""

    def __init__(self, flow: nn.Module, holder: dict):
        super().__init__()
        self.flow, self.holder = flow, holder

    def forward(self, inputs, padding_mask, global_conditioning=None, reverse=False):
        self.holder["frames"] = padding_mask.sum(dim=(1, 2))
        return self.flow(inputs, padding_mask, global_conditioning, reverse=reverse)


class MaskedHifiGan(nn.Module):
    """VitsHifiGan.forward with each convolution's input zeroed past the row's true length. The ONNX
    export runs this same code, its stages on time tiles (converters/speech/masking.py)."""

    def __init__(self, hifigan: nn.Module, holder: dict):
        super().__init__()
        self.g, self.holder = hifigan, holder

    def _resblock(self, block, h, mask):
        s = block.leaky_relu_slope
        for conv1, conv2 in zip(block.convs1, block.convs2):
            residual = h
            h = conv1(F.leaky_relu(h, s) * mask)
            h = conv2(F.leaky_relu(h, s) * mask)
            h = h + residual
        return h

    def _stage(self, blocks, h, mask):
        res = self._resblock(blocks[0], h, mask)
        for block in blocks[1:]:
            res = res + self._resblock(block, h, mask)
        return res / len(blocks)

    def _upsampled_stage(self, i: int, blocks, h, mask):
        """Stage `i`'s residual blocks on the upsampled signal (the export splits it into time tiles)."""
        return self._stage(blocks, h, mask)

    def forward(self, spectrogram, global_conditioning=None):
        g, slope, frames = self.g, self.g.config.leaky_relu_slope, self.holder["frames"]
        scale, dtype = 1, spectrogram.dtype
        mask = frame_mask(frames, spectrogram.shape[2], scale, dtype)
        h = g.conv_pre(spectrogram * mask)
        if global_conditioning is not None:
            h = h + g.cond(global_conditioning)
        for i, rate in enumerate(g.config.upsample_rates):
            h = g.upsampler[i](F.leaky_relu(h, slope) * mask)
            scale *= rate
            mask = frame_mask(frames, h.shape[2], scale, dtype)
            h = h * mask
            h = self._upsampled_stage(i, list(g.resblocks[i * g.num_kernels: (i + 1) * g.num_kernels]), h, mask)
        h = g.conv_post(F.leaky_relu(h) * mask)  # HF uses the default slope here
        return torch.tanh(h)


class TorchVitsEngine:
    def __init__(self, folder: Path, spec: EngineSpec, min_tokens: int = 1, args: dict | None = None):
        from transformers import VitsModel

        self.device = resolve_device(spec, args)
        self.dtype = DTYPES[spec.dtype]
        model = load_pretrained(VitsModel, Path(folder) / WEIGHTS, self.device, spec.dtype, sdpa=False)
        holder: dict = {}
        model.flow = FlowMaskTap(model.flow, holder)
        model.decoder = MaskedHifiGan(model.decoder, holder)
        self.model = model
        self.min_tokens = min_tokens  # as the ONNX engine pads (masked: the audio does not change)

    def run(self, rows: list[np.ndarray], voices: list[Voice], seeds: list[int]) -> list[np.ndarray]:
        """Waveforms (float32, true length) of token-id rows, one forward."""
        ids, mask = pad_vits_batch(rows, self.min_tokens)
        v, dev = self.model, self.device

        def per_row(values: list[float]) -> torch.Tensor:  # VitsModel reads these as scalars; [rows, 1, 1] broadcasts alike
            return torch.tensor(values, dtype=self.dtype, device=dev).view(-1, 1, 1)

        with _LOCK, torch.inference_mode(), guard_oom(f"on {dev} synthesising {len(rows)} sentence(s) of up to {ids.shape[1]} tokens"):
            v.noise_scale = per_row([x.noise_scale for x in voices])
            v.noise_scale_duration = per_row([x.noise_scale_duration for x in voices])
            v.speaking_rate = per_row([x.speaking_rate for x in voices])
            with seeded_noise(torch.tensor(seeds, dtype=torch.int64, device=dev)):
                out = v(input_ids=torch.from_numpy(ids).to(dev), attention_mask=torch.from_numpy(mask).to(dev), return_dict=False)
            waves, lengths = to_numpy(out[0]), out[1].cpu().numpy()
        return [waves[i, : int(n)] for i, n in enumerate(lengths)]
