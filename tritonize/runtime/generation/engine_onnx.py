"""The generation models on ONNX Runtime (CPU): the exported graphs behind the engine, one forward over a
prompt (prefill) and one forward over the newest token of many sequences at once (decode, reading and
extending the KV cache).

GPT-2's graph takes an attention mask and position ids, so shorter caches are left-padded and masked.
T5 runs its cached step through a graph exported with a decoder mask (see
converters/generation/t5_step.py); its relative position bias only sees distances, so left padding
works there too, and the encoder outputs (cross-attention keys/values) are right-padded and masked.
A batch's cache stays in the arrays ORT returned from one step to the next (see `RowBatch`); a GPT-2
graph rewritten by converters/generation/append_cache.py returns only each step's new columns, which go
into buffers with spare columns, so a step never copies the cache.
Prompts that join in the same engine step share one prefill forward (`prefill_many`: GPT-2 left-padded
with mask and position ids, T5's encoder on right-padded prompts with mask); the engine decides which
prompts go together (`tritonize.runtime.generation.prefill`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tritonize.contract.generation import NEW_CACHE_PREFIX
from tritonize.runtime.generation.cache import CacheSlot, RowBatch, batch_for
from tritonize.runtime.generation.prefill import CPU_PREFILL_OVERHEAD_TOKENS
from tritonize.runtime.text_inputs import pad_rows


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between steps: the cores are shared with Triton's own threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# Room a batch's cache buffers keep for new columns: each step reads the spare columns too (masked), and a
# full buffer is copied once to grow; at 16 rows, 16 columns cost ~1 ms a step and a copy every 16 steps.
APPEND_SPARE_COLUMNS = 16


class CausalLM:
    """A decoder-only graph from Optimum's `text-generation-with-past` export (GPT-2)."""

    decoder_only = True
    prefill_overhead_tokens = CPU_PREFILL_OVERHEAD_TOKENS

    def __init__(self, folder: Path, threads: int):
        self.session = ort_session(folder / "model.onnx", threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")), key=_layer_order)
        # A graph that returns only the new cache columns gets buffers with spare columns; one converted
        # before append_cache returns the whole cache (`present.*`).
        appends = any(o.name.startswith(NEW_CACHE_PREFIX) for o in self.session.get_outputs())
        cache_out = NEW_CACHE_PREFIX if appends else "present."
        self.present_names = [n.replace("past_key_values.", cache_out, 1) for n in self.past_names]
        self.spare = APPEND_SPARE_COLUMNS if appends else 0
        shape = inputs[self.past_names[0]].shape
        self.heads, self.head_dim = int(shape[1]), int(shape[3])
        self.uses_positions = "position_ids" in inputs
        self._batch: RowBatch | None = None

    def _run(self, ids: np.ndarray, past: list[np.ndarray], mask: np.ndarray, positions: np.ndarray):
        feed = {"input_ids": ids, "attention_mask": mask, **dict(zip(self.past_names, past))}
        if self.uses_positions:
            feed["position_ids"] = positions
        out = self.session.run(["logits", *self.present_names], feed)
        return out[0], out[1:]

    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, CacheSlot]:
        return self.prefill_many([prompt])[0]

    def prefill_many(self, prompts: list[list[int]]) -> list[tuple[np.ndarray, CacheSlot]]:
        """One forward over left-padded prompts (every row's last token in the last column); each slot
        keeps only its own prompt's cache columns, as a solo prefill would."""
        ids, mask, positions = left_padded(prompts)
        rows, width = ids.shape
        empty = [np.zeros((rows, self.heads, 0, self.head_dim), np.float32)] * len(self.past_names)
        logits, present = self._run(ids, empty, mask, positions)
        if rows == 1:
            return [(logits[0, -1], CacheSlot(own=present, cached=width))]
        return [(logits[r, -1], CacheSlot(own=[np.ascontiguousarray(c[r : r + 1, :, width - len(p) :]) for c in present], cached=len(p)))
                for r, p in enumerate(prompts)]

    def groups(self, slots: dict[int, CacheSlot]) -> list[list[int]]:
        return [list(slots)] if slots else []

    def decode(self, members: list[int], slots: dict[int, CacheSlot], tokens: list[int]) -> np.ndarray:
        b = self._batch = batch_for(self._batch, members, slots, spare=self.spare)
        ids, mask, positions = b.inputs(dict(zip(members, tokens)), slots)
        logits, cache = self._run(ids, b.past, mask, positions)
        if self.spare:
            b.append(cache, slots)
        else:
            b.advance(cache, mask, slots)
        return logits[[b.rows.index(m) for m in members], -1]

    def forget(self) -> None:
        self._batch = None


class Seq2SeqLM:
    """T5: Optimum's encoder and first decoder step, and the masked cached step that
    `tritonize.converters.generation.t5_step` exports (Optimum's own cached step has no decoder mask)."""

    decoder_only = False
    prefill_overhead_tokens = CPU_PREFILL_OVERHEAD_TOKENS

    def __init__(self, folder: Path, threads: int, decoder_start_token_id: int):
        self.encoder = ort_session(folder / "encoder_model.onnx", threads)
        self.first = ort_session(folder / "decoder_model.onnx", threads)
        self.step = ort_session(folder / "decoder_step.onnx", threads)
        self.start = decoder_start_token_id
        names = [i.name for i in self.step.get_inputs()]
        self.self_names = sorted((n for n in names if n.endswith((".decoder.key", ".decoder.value"))), key=_layer_order)
        self.cross_names = sorted((n for n in names if n.endswith((".encoder.key", ".encoder.value"))), key=_layer_order)
        self.first_outputs = [n.replace("past_key_values", "present") for n in self.self_names + self.cross_names]
        self.step_outputs = [n.replace("past_key_values", "present") for n in self.self_names]
        self._batch: RowBatch | None = None

    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, CacheSlot]:
        return self.prefill_many([prompt])[0]

    def prefill_many(self, prompts: list[list[int]]) -> list[tuple[np.ndarray, CacheSlot]]:
        """The encoder over right-padded prompts (masked), then the first decoder step of every row against
        the masked encoder output; each slot keeps its own cross-attention columns (its prompt's length)."""
        ids, mask = pad_rows(prompts, pad_id=0)  # masked: the pad id is never attended to
        width = ids.shape[1]
        hidden = self.encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
        start = np.full((len(prompts), 1), self.start, np.int64)
        out = self.first.run(["logits", *self.first_outputs], {"input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})
        n_self = len(self.self_names)
        own, cross = out[1 : 1 + n_self], out[1 + n_self :]
        if len(prompts) == 1:
            return [(out[0][0, -1], CacheSlot(own=own, cached=1, cross=cross, encoder_length=width))]
        return [(out[0][r, -1], CacheSlot(own=[np.ascontiguousarray(c[r : r + 1]) for c in own], cached=1,
                                          cross=[np.ascontiguousarray(c[r : r + 1, :, : len(p)]) for c in cross], encoder_length=len(p)))
                for r, p in enumerate(prompts)]

    def groups(self, slots: dict[int, CacheSlot]) -> list[list[int]]:
        return [list(slots)] if slots else []

    def decode(self, members: list[int], slots: dict[int, CacheSlot], tokens: list[int]) -> np.ndarray:
        b = self._batch = batch_for(self._batch, members, slots)
        ids, mask, _ = b.inputs(dict(zip(members, tokens)), slots)
        feed = {
            "input_ids": ids,
            "decoder_attention_mask": mask,
            "encoder_attention_mask": b.encoder_mask,
            **dict(zip(self.self_names, b.past)),
            **dict(zip(self.cross_names, b.cross)),
        }
        out = self.step.run(["logits", *self.step_outputs], feed)
        b.advance(out[1:], mask, slots)
        return out[0][[b.rows.index(m) for m in members], -1]

    def forget(self) -> None:
        self._batch = None


def left_padded(prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, attention mask and position ids of prompts left-padded to the longest (padding: id 0,
    mask 0, position 0; masked out, so any value would do)."""
    width = max(map(len, prompts))
    ids = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros_like(ids)
    positions = np.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :], mask[r, width - len(p) :] = p, 1
        positions[r, width - len(p) :] = np.arange(len(p))
    return ids, mask, positions


def _layer_order(name: str) -> tuple[int, str]:
    m = re.search(r"\.(\d+)\.", name)
    return (int(m.group(1)) if m else 0, name)
