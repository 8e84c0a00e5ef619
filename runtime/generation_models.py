"""The exported ONNX graphs behind the engine: one forward over a prompt (prefill) and one forward over
the newest token of many sequences at once (decode, reading and extending the KV cache).

Continuous batching means the rows of a decode batch have caches of different lengths. GPT-2's graph
takes an attention mask and position ids, so shorter caches are left-padded and masked (the padded
columns get exactly zero attention weight: batched logits equal solo logits bit for bit). T5 runs its
cached step through a graph exported with a decoder mask (see converters/generation_t5_step.py); its
relative position bias only sees distances, so left padding works there too, and the encoder outputs
(cross-attention keys/values) are right-padded and masked.

A batch's cache stays in the arrays ORT returned while the batch keeps its members; only when a
sequence joins or leaves is the batch rebuilt from each member's own slice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between steps: the cores are shared with Triton's own threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class CacheSlot:
    """Where a sequence's KV cache lives: its own arrays, or a row of the batch it last ran in."""

    own: list[np.ndarray] | None = None  # per cache tensor, [1, heads, length, head_dim]
    cached: int = 0  # tokens in the self-attention cache
    cross: list[np.ndarray] = field(default_factory=list)  # encoder-decoder only: cross-attention K/V
    encoder_length: int = 0


@dataclass
class _Batch:
    members: tuple[int, ...]  # ids of the sequences, in row order
    past: list[np.ndarray]
    mask: np.ndarray
    cross: list[np.ndarray] = field(default_factory=list)
    encoder_mask: np.ndarray | None = None


def _left_pad(a: np.ndarray, length: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, 0), (length - a.shape[2], 0), (0, 0))) if a.shape[2] < length else a


def _right_pad(a: np.ndarray, length: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, 0), (0, length - a.shape[2]), (0, 0))) if a.shape[2] < length else a


class CausalLM:
    """A decoder-only graph from Optimum's `text-generation-with-past` export (GPT-2)."""

    decoder_only = True

    def __init__(self, folder: Path, threads: int):
        self.session = ort_session(folder / "model.onnx", threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")), key=_layer_order)
        self.present_names = [n.replace("past_key_values", "present") for n in self.past_names]
        shape = inputs[self.past_names[0]].shape
        self.heads, self.head_dim = int(shape[1]), int(shape[3])
        self.uses_positions = "position_ids" in inputs
        self._batch: _Batch | None = None

    def _run(self, ids: np.ndarray, past: list[np.ndarray], mask: np.ndarray, positions: np.ndarray):
        feed = {"input_ids": ids, "attention_mask": mask, **dict(zip(self.past_names, past))}
        if self.uses_positions:
            feed["position_ids"] = positions
        out = self.session.run(["logits", *self.present_names], feed)
        return out[0], out[1:]

    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, CacheSlot]:
        n = len(prompt)
        empty = [np.zeros((1, self.heads, 0, self.head_dim), np.float32)] * len(self.past_names)
        ids = np.asarray([prompt], np.int64)
        logits, present = self._run(ids, empty, np.ones((1, n), np.int64), np.arange(n, dtype=np.int64)[None])
        return logits[0, -1], CacheSlot(own=present, cached=n)

    def groups(self, slots: dict[int, CacheSlot]) -> list[list[int]]:
        return [list(slots)] if slots else []

    def decode(self, members: list[int], slots: dict[int, CacheSlot], tokens: list[int]) -> np.ndarray:
        key = tuple(members)
        b = self._batch
        if b is not None and b.members == key:
            past, mask = b.past, np.concatenate([b.mask, np.ones((len(key), 1), np.int64)], axis=1)
        else:
            self._release(slots)
            width = max(slots[m].cached for m in key)
            past = [np.concatenate([_left_pad(slots[m].own[t], width) for m in key]) for t in range(len(self.past_names))]
            mask = np.zeros((len(key), width + 1), np.int64)
            for row, m in enumerate(key):
                mask[row, width - slots[m].cached :] = 1
        positions = np.asarray([[slots[m].cached] for m in key], np.int64)
        logits, present = self._run(np.asarray(tokens, np.int64)[:, None], past, mask, positions)
        self._batch = _Batch(key, present, mask)
        for m in key:
            slots[m].own = None  # now a row of the batch
            slots[m].cached += 1
        return logits[:, -1]

    def _release(self, slots: dict[int, CacheSlot]) -> None:
        """Give the members of the old batch that are still running their own cache slices back."""
        b, self._batch = self._batch, None
        if b is None:
            return
        width = b.past[0].shape[2]
        for row, m in enumerate(b.members):
            if m in slots and slots[m].own is None:
                slots[m].own = [p[row : row + 1, :, width - slots[m].cached :] for p in b.past]

    def forget(self) -> None:
        self._batch = None


class Seq2SeqLM:
    """T5: Optimum's encoder and first decoder step, and the masked cached step that
    `converters.generation_t5_step` exports (Optimum's own cached step has no decoder mask)."""

    decoder_only = False

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
        self._batch: _Batch | None = None

    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, CacheSlot]:
        ids = np.asarray([prompt], np.int64)
        mask = np.ones_like(ids)
        hidden = self.encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
        feed = {"input_ids": np.asarray([[self.start]], np.int64), "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        out = self.first.run(["logits", *self.first_outputs], feed)
        n_self = len(self.self_names)
        return out[0][0, -1], CacheSlot(own=out[1 : 1 + n_self], cached=1, cross=out[1 + n_self :], encoder_length=len(prompt))

    def groups(self, slots: dict[int, CacheSlot]) -> list[list[int]]:
        return [list(slots)] if slots else []

    def decode(self, members: list[int], slots: dict[int, CacheSlot], tokens: list[int]) -> np.ndarray:
        key = tuple(members)
        b = self._batch
        if b is not None and b.members == key:
            past, mask = b.past, np.concatenate([b.mask, np.ones((len(key), 1), np.int64)], axis=1)
        else:
            self._release(slots)
            width = max(slots[m].cached for m in key)
            enc_width = max(slots[m].encoder_length for m in key)
            past = [np.concatenate([_left_pad(slots[m].own[t], width) for m in key]) for t in range(len(self.self_names))]
            cross = [np.concatenate([_right_pad(slots[m].cross[t], enc_width) for m in key]) for t in range(len(self.cross_names))]
            mask = np.zeros((len(key), width + 1), np.int64)
            enc_mask = np.zeros((len(key), enc_width), np.int64)
            for row, m in enumerate(key):
                mask[row, width - slots[m].cached :] = 1
                enc_mask[row, : slots[m].encoder_length] = 1
            b = _Batch(key, past, mask, cross, enc_mask)
        feed = {
            "input_ids": np.asarray(tokens, np.int64)[:, None],
            "decoder_attention_mask": mask,
            "encoder_attention_mask": b.encoder_mask,
            **dict(zip(self.self_names, past)),
            **dict(zip(self.cross_names, b.cross)),
        }
        out = self.step.run(["logits", *self.step_outputs], feed)
        self._batch = _Batch(key, out[1:], mask, b.cross, b.encoder_mask)
        for m in key:
            slots[m].own = None
            slots[m].cached += 1
        return out[0][:, -1]

    def _release(self, slots: dict[int, CacheSlot]) -> None:
        b, self._batch = self._batch, None
        if b is None:
            return
        width = b.past[0].shape[2]
        for row, m in enumerate(b.members):
            if m in slots and slots[m].own is None:
                s = slots[m]
                s.own = [p[row : row + 1, :, width - s.cached :] for p in b.past]
                s.cross = [c[row : row + 1, :, : s.encoder_length] for c in b.cross]

    def forget(self) -> None:
        self._batch = None


def _layer_order(name: str) -> tuple[int, str]:
    m = re.search(r"\.(\d+)\.", name)
    return (int(m.group(1)) if m else 0, name)
