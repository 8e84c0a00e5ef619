"""Make VITS padding-invariant: a sentence's audio must not depend on the longer sentences it is
batched with. Everything before the vocoder already masks padding; HiFi-GAN's convolutions do not,
so near a short row's end they read the bias-filled padding instead of the zeros a solo run sees
(measured: the last ~40 samples differed by up to 0.78). Zeroing every conv input past the row's
length restores exactly the solo computation for the samples that are served.

The masking is the served PyTorch engine's own (tritonize/runtime/speech/engine_torch.py); here the
residual blocks of each stage run on overlapping time tiles (time_tiles.py), so that ONNX Runtime's
threads share the narrow late-stage Convs of a single sentence."""

from __future__ import annotations

from torch import nn

from tritonize.converters.speech.time_tiles import stack_radius, tiled, tiles_for
from tritonize.runtime.speech.engine_torch import FlowMaskTap, MaskedHifiGan


class TiledMaskedHifiGan(MaskedHifiGan):
    """The served PyTorch engine's masked vocoder, each stage's residual blocks on time tiles."""

    def _upsampled_stage(self, i: int, blocks, h, mask):
        return tiled(lambda x, m: self._stage(blocks, x, m), h, mask, tiles_for(self.g.upsampler[i].out_channels), stack_radius(blocks))


def padding_invariant(model: nn.Module) -> nn.Module:
    """The model with its flow tapped and its vocoder masked (modifies and returns `model`)."""
    holder: dict = {}
    model.flow = FlowMaskTap(model.flow, holder)
    model.decoder = TiledMaskedHifiGan(model.decoder, holder)
    return model
