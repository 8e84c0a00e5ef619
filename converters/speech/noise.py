"""Seeded, position-addressed Gaussian noise that PyTorch and the exported ONNX graph compute alike.

VITS samples noise twice per synthesis (durations, then latents). To make a fixed seed give a fixed
waveform, served and in PyTorch, the noise is a pure function of (seed, stream, channel, position):
integer hashing (exact in int64 on both sides) to two uniforms, then Box-Muller. A row's noise does
not depend on how long the other rows of its batch are, so batching never changes a row's audio.
"""

from __future__ import annotations

import contextlib
import math

import torch

_M = 2147483647  # 2^31 - 1: products of a value below it and the multipliers stay inside int64
_POSITIONS = 1 << 22  # positions per channel (frames or tokens); far beyond any sentence


def _uniform(index: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    h = (index * 48271 + seed * 69621 + 12345) % _M
    h = (h * 48271) % _M
    h = (h * 69621 + seed) % _M
    h = (h * 48271) % _M
    return (h.to(torch.float32) + 1.0) / (_M + 1.0)


def hash_normal(seed: torch.Tensor, channels, length, stream: int) -> torch.Tensor:
    """[batch, channels, length] standard normal noise, row b determined by seed[b] alone."""
    c = torch.arange(channels, dtype=torch.int64).view(1, -1, 1)
    t = torch.arange(length, dtype=torch.int64).view(1, 1, -1)
    index = ((stream * 1024 + c) * _POSITIONS + t) * 2
    s = (seed.to(torch.int64) % _M).view(-1, 1, 1)
    u1, u2 = _uniform(index, s), _uniform(index + 1, s)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


@contextlib.contextmanager
def seeded_noise(seed: torch.Tensor):
    """Within the block, VitsModel's torch.randn (durations) and torch.randn_like (latents) draw hash noise."""
    real_randn, real_randn_like = torch.randn, torch.randn_like

    def randn(*size, **kwargs):
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return hash_normal(seed, size[1], size[2], stream=0)

    def randn_like(x, **kwargs):
        return hash_normal(seed, x.shape[1], x.shape[2], stream=1)

    torch.randn, torch.randn_like = randn, randn_like
    try:
        yield
    finally:
        torch.randn, torch.randn_like = real_randn, real_randn_like
