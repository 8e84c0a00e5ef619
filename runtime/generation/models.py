"""The exported ONNX graphs behind the engine: one forward over a prompt (prefill) and one forward over
the newest token of many sequences at once (decode, reading and extending the KV cache).

Continuous batching means the rows of a decode batch have caches of different lengths. GPT-2's graph
takes an attention mask and position ids, so shorter caches are left-padded and masked (the padded
columns get exactly zero attention weight; batched logits measured identical to solo ones). T5 runs its
cached step through a graph exported with a decoder mask (see converters/generation/t5_step.py); its
relative position bias only sees distances, so left padding works there too, and the encoder outputs
(cross-attention keys/values) are right-padded and masked.

A batch's cache stays in the arrays ORT returned from one step to the next (see `RowBatch`).
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


def _left_pad(a: np.ndarray, length: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, 0), (length - a.shape[2], 0), (0, 0))) if a.shape[2] < length else a


def _right_pad(a: np.ndarray, length: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, 0), (0, length - a.shape[2]), (0, 0))) if a.shape[2] < length else a


class RowBatch:
    """The running batch's caches as ORT arrays, one row per sequence (or a free row).

    Self-attention caches are left-padded to a common width and masked; cross-attention caches (T5) are
    right-padded and masked. A sequence that leaves frees its row (masked out, still computed: a step is
    bound by reading the weights, so a spare row costs little); a sequence that joins is written into a
    free row in place when its cache fits. Only otherwise, or when free rows or padding pile up, is the
    batch rebuilt, which copies every cache once.
    """

    def __init__(self, members: list[int], slots: dict[int, CacheSlot]):
        width = max(slots[m].cached for m in members)
        self.rows: list[int | None] = list(members)
        self.past = [np.concatenate([_left_pad(slots[m].own[t], width) for m in members]) for t in range(len(slots[members[0]].own))]
        self.mask = np.zeros((len(members), width), np.int64)
        for row, m in enumerate(members):
            self.mask[row, width - slots[m].cached :] = 1
        self.cross: list[np.ndarray] = []
        self.encoder_mask = np.zeros((len(members), 0), np.int64)
        if slots[members[0]].cross:
            enc = max(slots[m].encoder_length for m in members)
            self.cross = [np.concatenate([_right_pad(slots[m].cross[t], enc) for m in members]) for t in range(len(slots[members[0]].cross))]
            self.encoder_mask = np.zeros((len(members), enc), np.int64)
            for row, m in enumerate(members):
                self.encoder_mask[row, : slots[m].encoder_length] = 1
        for m in members:
            slots[m].own = None  # now a row of the batch

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def fit(self, members: list[int], slots: dict[int, CacheSlot]) -> bool:
        """Free the rows of sequences that left and place joiners in free rows; False: rebuild instead."""
        live = set(members)
        for row, m in enumerate(self.rows):
            if m is not None and m not in live:
                self.rows[row] = None
        joiners = [m for m in members if m not in self.rows]
        free = [row for row, m in enumerate(self.rows) if m is None]
        longest = max(slots[m].cached for m in members)
        if len(joiners) > len(free) or any(slots[m].cached > self.width for m in joiners):
            return False
        if self.cross and any(slots[m].encoder_length > self.encoder_mask.shape[1] for m in joiners):
            return False
        if len(free) - len(joiners) > len(members) // 2 or self.width > 2 * longest + 32:
            return False  # too many spare rows or too much padding: compact
        for m, row in zip(joiners, free):
            s = slots[m]
            for dst, src in zip(self.past, s.own):
                dst[row] = 0
                dst[row, :, self.width - s.cached :] = src[0]
            self.mask[row] = 0
            self.mask[row, self.width - s.cached :] = 1
            for dst, src in zip(self.cross, s.cross):
                dst[row] = 0
                dst[row, :, : s.encoder_length] = src[0]
            if self.cross:
                self.encoder_mask[row] = 0
                self.encoder_mask[row, : s.encoder_length] = 1
            self.rows[row] = m
            s.own = None
        return True

    def inputs(self, tokens: dict[int, int], slots: dict[int, CacheSlot]):
        """Token ids, the mask with the new column, and position ids, for every row (free rows: dummies)."""
        ids = np.asarray([[tokens.get(m, 0) if m is not None else 0] for m in self.rows], np.int64)
        mask = np.concatenate([self.mask, np.ones((len(self.rows), 1), np.int64)], axis=1)
        positions = np.asarray([[slots[m].cached if m is not None else 0] for m in self.rows], np.int64)
        return ids, mask, positions

    def advance(self, present: list[np.ndarray], mask: np.ndarray, slots: dict[int, CacheSlot]) -> None:
        self.past, self.mask = present, mask
        for m in self.rows:
            if m is not None:
                slots[m].cached += 1

    def release(self, slots: dict[int, CacheSlot]) -> None:
        """Give sequences still running their own cache slices back (before a rebuild)."""
        for row, m in enumerate(self.rows):
            if m is not None and m in slots and slots[m].own is None:
                s = slots[m]
                s.own = [p[row : row + 1, :, self.width - s.cached :] for p in self.past]
                if self.cross:
                    s.cross = [c[row : row + 1, :, : s.encoder_length] for c in self.cross]


def batch_for(batch: RowBatch | None, members: list[int], slots: dict[int, CacheSlot]) -> RowBatch:
    """The batch for this step: the running one adjusted in place, or a new one."""
    if batch is not None and batch.fit(members, slots):
        return batch
    if batch is not None:
        batch.release(slots)
    return RowBatch(members, slots)


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
        self._batch: RowBatch | None = None

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
        b = self._batch = batch_for(self._batch, members, slots)
        ids, mask, positions = b.inputs(dict(zip(members, tokens)), slots)
        logits, present = self._run(ids, b.past, mask, positions)
        b.advance(present, mask, slots)
        return logits[[b.rows.index(m) for m in members], -1]

    def forget(self) -> None:
        self._batch = None


class Seq2SeqLM:
    """T5: Optimum's encoder and first decoder step, and the masked cached step that
    `tritonize.converters.generation.t5_step` exports (Optimum's own cached step has no decoder mask)."""

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
        self._batch: RowBatch | None = None

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


def _layer_order(name: str) -> tuple[int, str]:
    m = re.search(r"\.(\d+)\.", name)
    return (int(m.group(1)) if m else 0, name)
