"""Make VITS padding-invariant: a sentence's audio must not depend on the longer sentences it is
batched with. Everything before the vocoder already masks padding; HiFi-GAN's convolutions do not,
so near a short row's end they read the bias-filled padding instead of the zeros a solo run sees
(measured: the last ~40 samples differed by up to 0.78). Zeroing every conv input past the row's
length restores exactly the solo computation for the samples that are served.

The residual blocks of each stage run on overlapping time tiles (time_tiles.py), so that ONNX
Runtime's threads share the narrow late-stage Convs of a single sentence."""

from __future__ import annotations

import torch
from torch import nn

from tritonize.converters.speech.time_tiles import stack_radius, tiled, tiles_for


def _mask(lengths: torch.Tensor, width, scale: int) -> torch.Tensor:
    positions = torch.arange(width, device=lengths.device).view(1, 1, -1)
    return (positions < (lengths * scale).view(-1, 1, 1)).to(torch.float32)


class FlowMaskTap(nn.Module):
    """VitsModel calls its flow with the output padding mask: remember it for the vocoder."""

    def __init__(self, flow: nn.Module, holder: dict):
        super().__init__()
        self.flow, self.holder = flow, holder

    def forward(self, inputs, padding_mask, global_conditioning=None, reverse=False):
        self.holder["frames"] = padding_mask.sum(dim=(1, 2))
        return self.flow(inputs, padding_mask, global_conditioning, reverse=reverse)


class MaskedHifiGan(nn.Module):
    """VitsHifiGan.forward with each convolution's input zeroed past the row's true length."""

    def __init__(self, hifigan: nn.Module, holder: dict):
        super().__init__()
        self.g, self.holder = hifigan, holder

    def _resblock(self, block, h, mask):
        s = block.leaky_relu_slope
        for conv1, conv2 in zip(block.convs1, block.convs2):
            residual = h
            h = conv1(nn.functional.leaky_relu(h, s) * mask)
            h = conv2(nn.functional.leaky_relu(h, s) * mask)
            h = h + residual
        return h

    def _stage(self, blocks, h, mask):
        res = self._resblock(blocks[0], h, mask)
        for block in blocks[1:]:
            res = res + self._resblock(block, h, mask)
        return res / len(blocks)

    def forward(self, spectrogram, global_conditioning=None):
        g, slope, frames = self.g, self.g.config.leaky_relu_slope, self.holder["frames"]
        scale = 1
        mask = _mask(frames, spectrogram.shape[2], scale)
        h = g.conv_pre(spectrogram * mask)
        if global_conditioning is not None:
            h = h + g.cond(global_conditioning)
        for i, rate in enumerate(g.config.upsample_rates):
            h = g.upsampler[i](nn.functional.leaky_relu(h, slope) * mask)
            scale *= rate
            mask = _mask(frames, h.shape[2], scale)
            h = h * mask
            blocks = list(g.resblocks[i * g.num_kernels: (i + 1) * g.num_kernels])
            h = tiled(lambda x, m: self._stage(blocks, x, m), h, mask, tiles_for(g.upsampler[i].out_channels), stack_radius(blocks))
        h = g.conv_post(nn.functional.leaky_relu(h) * mask)  # HF uses the default slope here
        return torch.tanh(h)


def padding_invariant(model: nn.Module) -> nn.Module:
    """The model with its flow tapped and its vocoder masked (modifies and returns `model`)."""
    holder: dict = {}
    model.flow = FlowMaskTap(model.flow, holder)
    model.decoder = MaskedHifiGan(model.decoder, holder)
    return model
