"""The running batch's KV cache, one row per sequence, for either engine.

Continuous batching means the rows of a decode batch have caches of different lengths. Shorter
self-attention caches are left-padded and masked (the padded columns get exactly zero attention
weight; batched logits measured identical to solo ones); cross-attention caches (T5) are right-padded
and masked. The arrays are numpy (ONNX Runtime) or torch tensors on the engine's device (PyTorch): the
few array operations that differ come in as `ArrayOps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class ArrayOps:
    """Concatenate along the batch axis; pad axis 2 (the cache length) on the left or the right."""

    concat: Callable[[list], Any]
    pad_left: Callable[[Any, int], Any]
    pad_right: Callable[[Any, int], Any]


def _left_pad(a: np.ndarray, length: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, 0), (length - a.shape[2], 0), (0, 0))) if a.shape[2] < length else a


def _right_pad(a: np.ndarray, length: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, 0), (0, length - a.shape[2]), (0, 0))) if a.shape[2] < length else a


NUMPY = ArrayOps(np.concatenate, _left_pad, _right_pad)


@dataclass
class CacheSlot:
    """Where a sequence's KV cache lives: its own arrays, or a row of the batch it last ran in."""

    own: list | None = None  # per cache tensor, [1, heads, length, head_dim] (numpy or torch)
    cached: int = 0  # tokens in the self-attention cache
    cross: list = field(default_factory=list)  # encoder-decoder only: cross-attention K/V
    encoder_length: int = 0


class RowBatch:
    """The running batch's caches, one row per sequence (or a free row).

    Self-attention caches are left-padded to a common width and masked; cross-attention caches (T5) are
    right-padded and masked. A sequence that leaves frees its row (masked out, still computed: a step is
    bound by reading the weights, so a spare row costs little); a sequence that joins is written into a
    free row in place when its cache fits. Only otherwise, or when free rows or padding pile up, is the
    batch rebuilt, which copies every cache once.

    With `spare` > 0 (a graph that returns only the new columns, see converters/generation/append_cache.py)
    the caches are buffers with room for `spare` more columns: every step reads the whole buffer (the
    unused columns masked) and `append` writes the new column in place; a full buffer grows by `spare`.
    """

    def __init__(self, members: list[int], slots: dict[int, CacheSlot], ops: ArrayOps = NUMPY, spare: int = 0):
        width = max(slots[m].cached for m in members)
        self.ops, self.spare = ops, spare
        self.rows: list[int | None] = list(members)
        self.past = [ops.pad_right(ops.concat([ops.pad_left(slots[m].own[t], width) for m in members]), width + spare)
                     for t in range(len(slots[members[0]].own))]
        self.mask = np.zeros((len(members), width), np.int64)  # the columns in use
        for row, m in enumerate(members):
            self.mask[row, width - slots[m].cached :] = 1
        self.cross: list[np.ndarray] = []
        self.encoder_mask = np.zeros((len(members), 0), np.int64)
        if slots[members[0]].cross:
            enc = max(slots[m].encoder_length for m in members)
            self.cross = [ops.concat([ops.pad_right(slots[m].cross[t], enc) for m in members]) for t in range(len(slots[members[0]].cross))]
            self.encoder_mask = np.zeros((len(members), enc), np.int64)
            for row, m in enumerate(members):
                self.encoder_mask[row, : slots[m].encoder_length] = 1
        for m in members:
            slots[m].own = None  # now a row of the batch

    @property
    def width(self) -> int:
        """Cache columns in use (the buffers may hold more)."""
        return self.mask.shape[1]

    @property
    def capacity(self) -> int:
        return self.past[0].shape[2] if self.past else self.width

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
                dst[row, :, self.width - s.cached : self.width] = src[0]
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
        """Token ids, the mask (the cache's columns, then the new token's), and position ids, for every
        row (free rows: dummies)."""
        ids = np.asarray([[tokens.get(m, 0) if m is not None else 0] for m in self.rows], np.int64)
        mask = np.zeros((len(self.rows), self.capacity + 1), np.int64)
        mask[:, : self.width] = self.mask
        mask[:, -1] = 1
        positions = np.asarray([[slots[m].cached if m is not None else 0] for m in self.rows], np.int64)
        return ids, mask, positions

    def advance(self, present: list, mask: np.ndarray, slots: dict[int, CacheSlot]) -> None:
        """After a step of a graph that returns the whole cache (`present`): it becomes the batch's."""
        self.past, self.mask = present, mask
        self._advanced(slots)

    def append(self, new: list, slots: dict[int, CacheSlot]) -> None:
        """After a step of a graph that returns only the new column of each cache: written in place."""
        if self.width == self.capacity:
            self.past = [self.ops.pad_right(p, self.width + max(self.spare, 1)) for p in self.past]
        for buffer, column in zip(self.past, new):
            buffer[:, :, self.width] = column[:, :, 0]
        self.mask = np.concatenate([self.mask, np.ones((len(self.rows), 1), np.int64)], axis=1)
        self._advanced(slots)

    def _advanced(self, slots: dict[int, CacheSlot]) -> None:
        for m in self.rows:
            if m is not None:
                slots[m].cached += 1

    def release(self, slots: dict[int, CacheSlot]) -> None:
        """Give sequences still running their own cache slices back (before a rebuild)."""
        for row, m in enumerate(self.rows):
            if m is not None and m in slots and slots[m].own is None:
                s = slots[m]
                s.own = [p[row : row + 1, :, self.width - s.cached : self.width] for p in self.past]
                if self.cross:
                    s.cross = [c[row : row + 1, :, : s.encoder_length] for c in self.cross]


def batch_for(batch: RowBatch | None, members: list[int], slots: dict[int, CacheSlot], ops: ArrayOps = NUMPY,
              spare: int = 0) -> RowBatch:
    """The batch for this step: the running one adjusted in place, or a new one."""
    if batch is not None and batch.fit(members, slots):
        return batch
    if batch is not None:
        batch.release(slots)
    return RowBatch(members, slots, ops, spare)
