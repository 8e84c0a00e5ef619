"""T5's cached decoder step with a self-attention mask, so rows with different decoder lengths batch.

Optimum's `decoder_with_past_model.onnx` has no decoder attention mask and places the new token at
position `cache length`, so only rows of equal decoder length can share a forward. T5's position bias
depends only on the distance between query and key, so left-padding a shorter cache keeps every real
distance unchanged; masking the padded keys is all that is missing. This module re-assembles the step
from the Hugging Face model's own layers (no new weights, no change to the arithmetic) with that mask
as an input, and exports it with the same input/output names as Optimum's graph plus
`decoder_attention_mask` ([batch, cache length + 1], 1 for real positions).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class MaskedDecoderStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.decoder = model.decoder
        self.scale = model.config.d_model ** -0.5 if model.config.tie_word_embeddings else 1.0

    def _bias(self, width: int, device) -> torch.Tensor:
        """Relative position bias of the new token (at position `width`) against keys 0..width."""
        attention = self.decoder.block[0].layer[0].SelfAttention
        relative = torch.arange(width + 1, device=device)[None, :] - width
        buckets = attention._relative_position_bucket(
            relative, bidirectional=False, num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance,
        )
        return attention.relative_attention_bias(buckets).permute([2, 0, 1]).unsqueeze(0)  # [1, heads, 1, width + 1]

    @staticmethod
    def _attend(attention, x, keys, values, bias):
        b = x.shape[0]
        q = attention.q(x).view(b, -1, attention.n_heads, attention.key_value_proj_dim).transpose(1, 2)
        scores = torch.matmul(q, keys.transpose(3, 2)) + bias  # T5 does not scale the scores
        weights = nn.functional.softmax(scores.float(), dim=-1).type_as(scores)
        out = torch.matmul(weights, values).transpose(1, 2).contiguous().view(b, -1, attention.inner_dim)
        return attention.o(out)

    def forward(self, input_ids, decoder_attention_mask, encoder_attention_mask, *past):
        h = self.decoder.embed_tokens(input_ids)
        b = h.shape[0]
        width = past[0].shape[2]
        lowest = torch.finfo(h.dtype).min
        self_bias = self._bias(width, h.device) + (1.0 - decoder_attention_mask[:, None, None, :].to(h.dtype)) * lowest
        cross_bias = (1.0 - encoder_attention_mask[:, None, None, :].to(h.dtype)) * lowest
        presents = []
        for i, block in enumerate(self.decoder.block):
            self_k, self_v, cross_k, cross_v = past[4 * i : 4 * i + 4]
            sa = block.layer[0].SelfAttention
            x = block.layer[0].layer_norm(h)
            k = sa.k(x).view(b, -1, sa.n_heads, sa.key_value_proj_dim).transpose(1, 2)
            v = sa.v(x).view(b, -1, sa.n_heads, sa.key_value_proj_dim).transpose(1, 2)
            keys, values = torch.cat([self_k, k], dim=2), torch.cat([self_v, v], dim=2)
            h = h + self._attend(sa, x, keys, values, self_bias)
            x = block.layer[1].layer_norm(h)
            h = h + self._attend(block.layer[1].EncDecAttention, x, cross_k, cross_v, cross_bias)
            h = block.layer[2](h)  # T5LayerFF: h + feed_forward(layer_norm(h))
            presents += [keys, values]
        h = self.decoder.final_layer_norm(h) * self.scale
        return (self.model.lm_head(h), *presents)


def names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{part}.{kv}" for i in range(layers) for part in ("decoder", "encoder") for kv in ("key", "value")]
    present = [f"present.{i}.decoder.{kv}" for i in range(layers) for kv in ("key", "value")]
    return past, present


def export_masked_step(model, path: Path) -> None:
    cfg = model.config
    layers, heads, dim = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv
    step = MaskedDecoderStep(model).eval()
    past_names, present_names = names(layers)
    b, width, enc = 2, 3, 4
    past = []
    for _ in range(layers):
        past += [torch.randn(b, heads, width, dim), torch.randn(b, heads, width, dim), torch.randn(b, heads, enc, dim), torch.randn(b, heads, enc, dim)]
    dec_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # zeros in the example: no branch is traced away
    enc_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    ids = torch.tensor([[1], [2]])
    inputs = ["input_ids", "decoder_attention_mask", "encoder_attention_mask", *past_names]
    axes = {"input_ids": {0: "batch_size"}, "decoder_attention_mask": {0: "batch_size", 1: "past_decoder_sequence_length + 1"},
            "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"}, "logits": {0: "batch_size"}}
    for n in past_names:
        axes[n] = {0: "batch_size", 2: "encoder_sequence_length" if ".encoder." in n else "past_decoder_sequence_length"}
    for n in present_names:
        axes[n] = {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
    with torch.inference_mode():
        torch.onnx.export(step, (ids, dec_mask, enc_mask, *past), str(path), input_names=inputs,
                          output_names=["logits", *present_names], dynamic_axes=axes, opset_version=17, dynamo=False)
