"""The generation models on PyTorch (CUDA, or CPU for CI): GPT-2 and T5 built by transformers from the
stored config and weights, with the KV cache as torch tensors on the device.

The forwards are written here over the model's own modules (no new weights, the same arithmetic,
SDPA attention) rather than through transformers' cache classes, whose API differs between 4.x and
5.x: each step takes the cache as plain per-layer K/V tensors, a padding mask and position ids, so rows
with caches of different lengths share a forward exactly as in the ONNX graphs (left-padded, masked),
and several prompts share one prefill forward (left-padded for GPT-2, right-padded encoder input for T5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The shared module first: it sets the OpenMP wait policy before torch loads.
from tritonize.contract.engines import EngineSpec
from tritonize.contract.files import WEIGHTS
from tritonize.runtime.engine_torch import guard_oom, load_pretrained, resolve_device, to_numpy
import torch  # noqa: E402  (after the shared module, on purpose)
from torch.nn import functional as F

from tritonize.runtime.generation.cache import ArrayOps, CacheSlot, RowBatch, batch_for
from tritonize.runtime.generation.prefill import CPU_PREFILL_OVERHEAD_TOKENS


def _pad_left(a: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(a, (0, 0, length - a.shape[2], 0)) if a.shape[2] < length else a


def _pad_right(a: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(a, (0, 0, 0, length - a.shape[2])) if a.shape[2] < length else a


TORCH = ArrayOps(torch.cat, _pad_left, _pad_right)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, _, n, _ = x.shape
    return x.transpose(1, 2).reshape(b, n, -1)


class _TorchModel:
    """Device placement, the running batch and the numpy boundary shared by both architectures."""

    def __init__(self, folder: Path, spec: EngineSpec, args: dict | None, cls_name: str, model_type: str):
        import transformers

        self.device = resolve_device(spec, args)
        self.model = load_pretrained(getattr(transformers, cls_name), Path(folder) / WEIGHTS, self.device, spec.dtype, sdpa=False)
        if self.model.config.model_type != model_type:
            raise ValueError(f"the PyTorch generation engine runs {model_type}, not model_type {self.model.config.model_type!r}")
        self._batch: RowBatch | None = None
        # On a GPU a forward's fixed cost dominates: admitted prompts share forwards whenever the budget allows.
        self.prefill_overhead_tokens = CPU_PREFILL_OVERHEAD_TOKENS if torch.device(self.device).type == "cpu" else None

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def groups(self, slots: dict[int, CacheSlot]) -> list[list[int]]:
        return [list(slots)] if slots else []

    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, CacheSlot]:
        return self.prefill_many([prompt])[0]

    def prefill_many(self, prompts: list[list[int]]) -> list[tuple[np.ndarray, CacheSlot]]:
        with torch.inference_mode(), guard_oom(f"on {self.device} prefilling {len(prompts)} prompt(s) of up to {max(map(len, prompts))} tokens"):
            return self._prefill(prompts)

    def decode(self, members: list[int], slots: dict[int, CacheSlot], tokens: list[int]) -> np.ndarray:
        with torch.inference_mode(), guard_oom(f"on {self.device} decoding {len(members)} sequences"):
            b = self._batch = batch_for(self._batch, members, slots, TORCH)
            logits = self._decode(b, dict(zip(members, tokens)), slots)
            return to_numpy(logits[[b.rows.index(m) for m in members]])

    def forget(self) -> None:
        self._batch = None


class TorchCausalLM(_TorchModel):
    """GPT-2. Cache tensors per layer: key, value [rows, heads, length, head_dim]."""

    decoder_only = True

    def __init__(self, folder: Path, spec: EngineSpec, args: dict | None = None):
        super().__init__(folder, spec, args, "GPT2LMHeadModel", "gpt2")
        c = self.model.config
        self.heads = c.n_head
        scale = (c.n_embd // c.n_head) ** -0.5 if c.scale_attn_weights else 1.0
        self.scales = [scale / (i + 1) if c.scale_attn_by_inverse_layer_idx else scale for i in range(c.n_layer)]

    def _forward(self, ids: torch.Tensor, past: list[torch.Tensor] | None, mask: torch.Tensor, positions: torch.Tensor):
        """Logits of each row's last position and the new cache. mask: [rows, cache + new], 1 = real."""
        t = self.model.transformer
        n, total = ids.shape[1], mask.shape[1]
        h = t.wte(ids) + t.wpe(positions)
        # Query i (column total - n + i) sees real columns up to itself; a padding query sees itself, so
        # no row is all-masked (its output is never used).
        columns = torch.arange(total, device=ids.device)
        query_columns = columns[total - n :, None]
        allowed = (columns[None, :] <= query_columns)[None] & mask.bool()[:, None, :]
        allowed |= (columns[None, :] == query_columns)[None]
        allowed = allowed[:, None]  # [rows, 1, n, total]
        presents = []
        for i, block in enumerate(t.h):
            x = block.ln_1(h)
            q, k, v = (_heads(part, self.heads) for part in block.attn.c_attn(x).split(x.shape[-1], dim=2))
            if past is not None:
                k, v = torch.cat([past[2 * i], k], dim=2), torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scales[i])
            h = h + block.attn.c_proj(_merge(attended))
            h = h + block.mlp(block.ln_2(h))
        return self.model.lm_head(t.ln_f(h[:, -1])), presents

    def _prefill(self, prompts: list[list[int]]) -> list[tuple[np.ndarray, CacheSlot]]:
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        positions = np.zeros((len(prompts), width), np.int64)
        for r, p in enumerate(prompts):  # left-padded: every row's last token is the last column
            ids[r, width - len(p) :], mask[r, width - len(p) :] = p, 1
            positions[r, width - len(p) :] = np.arange(len(p))
        logits, presents = self._forward(self.tensor(ids), None, self.tensor(mask), self.tensor(positions))
        out = to_numpy(logits)
        return [(out[r], CacheSlot(own=[c[r : r + 1, :, width - len(p) :] for c in presents], cached=len(p))) for r, p in enumerate(prompts)]

    def _decode(self, b: RowBatch, tokens: dict[int, int], slots: dict[int, CacheSlot]) -> torch.Tensor:
        ids, mask, positions = b.inputs(tokens, slots)
        logits, present = self._forward(self.tensor(ids), b.past, self.tensor(mask), self.tensor(positions))
        b.advance(present, mask, slots)
        return logits


class TorchSeq2SeqLM(_TorchModel):
    """T5. Self-attention cache per layer: key, value; cross-attention (computed once per prompt): key, value."""

    decoder_only = False

    def __init__(self, folder: Path, spec: EngineSpec, decoder_start_token_id: int, args: dict | None = None):
        super().__init__(folder, spec, args, "T5ForConditionalGeneration", "t5")
        c = self.model.config
        self.start = decoder_start_token_id
        # transformers 5 keeps the old `tie_word_embeddings` meaning in `scale_decoder_outputs`.
        self.scale = c.d_model**-0.5 if getattr(c, "scale_decoder_outputs", c.tie_word_embeddings) else 1.0
        self.heads = c.num_heads

    def _self_bias(self, width: int) -> torch.Tensor:
        """Relative position bias of the new token (at position `width`) against keys 0..width: [1, heads, 1, width + 1]."""
        attention = self.model.decoder.block[0].layer[0].SelfAttention
        relative = torch.arange(width + 1, device=self.device)[None, :] - width
        buckets = attention._relative_position_bucket(
            relative, bidirectional=False, num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance,
        )
        return attention.relative_attention_bias(buckets).permute([2, 0, 1]).unsqueeze(0)

    def _step(self, ids, dec_mask, enc_mask, past: list[torch.Tensor], cross: list[torch.Tensor]):
        """One decoder token per row over the cache (masked) and the encoder output (masked)."""
        d = self.model.decoder
        h = d.embed_tokens(ids)
        lowest = torch.finfo(h.dtype).min
        self_bias = self._self_bias(past[0].shape[2]).to(h.dtype) + (1.0 - dec_mask[:, None, None, :].to(h.dtype)) * lowest
        cross_bias = (1.0 - enc_mask[:, None, None, :].to(h.dtype)) * lowest
        presents = []
        for i, block in enumerate(d.block):
            sa = block.layer[0].SelfAttention
            x = block.layer[0].layer_norm(h)
            k = torch.cat([past[2 * i], _heads(sa.k(x), self.heads)], dim=2)
            v = torch.cat([past[2 * i + 1], _heads(sa.v(x), self.heads)], dim=2)
            presents += [k, v]
            h = h + sa.o(_merge(F.scaled_dot_product_attention(_heads(sa.q(x), self.heads), k, v, attn_mask=self_bias, scale=1.0)))
            ca = block.layer[1].EncDecAttention
            x = block.layer[1].layer_norm(h)
            attended = F.scaled_dot_product_attention(_heads(ca.q(x), self.heads), cross[2 * i], cross[2 * i + 1], attn_mask=cross_bias, scale=1.0)
            h = h + ca.o(_merge(attended))
            h = block.layer[2](h)  # T5LayerFF: h + feed_forward(layer_norm(h))
        return self.model.lm_head(d.final_layer_norm(h[:, -1]) * self.scale), presents

    def _prefill(self, prompts: list[list[int]]) -> list[tuple[np.ndarray, CacheSlot]]:
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for r, p in enumerate(prompts):  # right-padded encoder input, masked
            ids[r, : len(p)], mask[r, : len(p)] = p, 1
        enc_mask = self.tensor(mask)
        hidden = self.model.encoder(input_ids=self.tensor(ids), attention_mask=enc_mask).last_hidden_state
        cross = []
        for block in self.model.decoder.block:
            ca = block.layer[1].EncDecAttention
            cross += [_heads(ca.k(hidden), self.heads), _heads(ca.v(hidden), self.heads)]
        rows, dim = len(prompts), self.model.config.d_kv
        empty = [hidden.new_zeros((rows, self.heads, 0, dim))] * len(cross)
        start = torch.full((rows, 1), self.start, dtype=torch.long, device=self.device)
        logits, presents = self._step(start, torch.ones_like(start), enc_mask, empty, cross)
        out = to_numpy(logits)
        return [(out[r], CacheSlot(own=[c[r : r + 1] for c in presents], cached=1, cross=[c[r : r + 1, :, : len(p)] for c in cross],
                                   encoder_length=len(p))) for r, p in enumerate(prompts)]

    def _decode(self, b: RowBatch, tokens: dict[int, int], slots: dict[int, CacheSlot]) -> torch.Tensor:
        ids, mask, _ = b.inputs(tokens, slots)
        logits, present = self._step(self.tensor(ids), self.tensor(mask), self.tensor(b.encoder_mask), b.past, b.cross)
        b.advance(present, mask, slots)
        return logits
