"""Run a HiFi-GAN stage's residual blocks on overlapping time tiles stacked along the batch axis.

Why: ONNX Runtime's NCHWc convolution hands its threads whole (batch row x 64 output channels x
output row) units. A unit-height VITS vocoder has one output row, so for one sentence a 64- or
32-channel Conv (the last two stages, a third of the Conv time) is one unit: one thread, however
many the session has. Cut into `tiles` overlapping pieces, the same Conv is `tiles` units.

Exact (up to float summation order): each tile carries `halo` extra samples on both sides, at least
the receptive radius of the whole residual stack (sum over its Convs of dilation * (kernel - 1) / 2),
so the wrong values a tile's cut edge produces never reach the kept middle. Outside the signal the
tiles are zero-padded and masked, as a solo run's convolutions see zeros there.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NCHWC_UNIT_CHANNELS = 64  # output channels per NCHWc work unit (MLAS: 4 blocks of 16 floats on AVX-512; of 8 on AVX2: 32)
TARGET_UNITS = 4  # work units wanted per Conv per sentence: enough for 4 intra-op threads


def stack_radius(resblocks: list[nn.Module]) -> int:
    """Samples a residual stack's output depends on, either side: the deepest chain of its Convs."""
    def radius(block) -> int:
        return sum(c.dilation[0] * (c.kernel_size[0] - 1) // 2 for c in [*block.convs1, *block.convs2])

    return max(radius(b) for b in resblocks)


def tiles_for(channels: int) -> int:
    """How many time tiles bring a Conv of `channels` outputs to TARGET_UNITS work units."""
    units = max(1, channels // NCHWC_UNIT_CHANNELS)
    return max(1, TARGET_UNITS // units)


def tiled(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor, mask: torch.Tensor,
          tiles: int, halo: int) -> torch.Tensor:
    """fn(h, mask) computed on `tiles` overlapping time tiles ([batch, C, T] -> [batch, C, T])."""
    if tiles == 1:
        return fn(h, mask)
    batch, length = h.shape[0], h.shape[2]
    step = (length + tiles - 1) // tiles
    right = step * tiles - length + halo

    def cut(x: torch.Tensor) -> torch.Tensor:  # [batch, C, T] -> [tiles * batch, C, step + 2 * halo]
        x = nn.functional.pad(x, (halo, right))
        return torch.cat([x[:, :, i * step: i * step + step + 2 * halo] for i in range(tiles)], dim=0)

    out = fn(cut(h), cut(mask))[:, :, halo: halo + step]
    return torch.cat([out[i * batch: (i + 1) * batch] for i in range(tiles)], dim=2)[:, :, :length]
