"""Pooling, softmax and VITS batch padding in numpy: the one torch-free module that converters share
with the runtime, so a parity check computes (and pads) exactly what the served steps do."""

from __future__ import annotations

import numpy as np


def mean_pool(token_embeddings: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The sentence-transformers recipe: average of the real tokens' embeddings."""
    m = mask[..., None].astype(np.float32)
    return (token_embeddings * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def pool(token_embeddings: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """One of sentence-transformers' pooling modes over right-padded rows (its `Pooling._forward_padded`)."""
    m = mask[..., None].astype(np.float32)
    if mode == "cls":  # the first pooled token: position 0, or the first after an excluded prompt
        return token_embeddings[np.arange(len(mask)), np.argmax(mask > 0, axis=1)]
    if mode == "max":
        return np.where(m > 0, token_embeddings, -np.inf).max(axis=1)
    if mode == "mean":
        return mean_pool(token_embeddings, mask)
    if mode == "mean_sqrt_len_tokens":
        return (token_embeddings * m).sum(axis=1) / np.sqrt(np.maximum(m.sum(axis=1), 1e-9))
    if mode == "weightedmean":  # weights 1, 2, ... by position
        w = m * np.arange(1, token_embeddings.shape[1] + 1, dtype=np.float32)[None, :, None]
        return (token_embeddings * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
    if mode == "lasttoken":  # the last real token (the first row position if none is real)
        last = np.where(mask.any(axis=1), mask.shape[1] - 1 - np.argmax(mask[:, ::-1] > 0, axis=1), mask.shape[1] - 1)
        return (token_embeddings * m)[np.arange(len(last)), last]
    raise ValueError(f"pooling mode {mode!r} is not one of sentence-transformers' modes")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# VITS rows are padded with an id inside the embedding table, masked: 0 always is. The tokenizer's own
# pad id may be an added token past the table (some published voices), which crashed the parity batch.
VITS_PAD_ID = 0


def pad_vits_batch(rows: list, min_tokens: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows as one batch (ids, mask), right-padded to the longest row or `min_tokens`: how the
    served VITS engine pads, and so how the converter's parity batch is padded."""
    width = max(min_tokens, *(len(r) for r in rows))
    ids = np.full((len(rows), width), VITS_PAD_ID, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask
