"""Pooling and softmax in numpy: the one torch-free module that converters share with the runtime,
so a parity check computes exactly what the served postprocess step computes."""

from __future__ import annotations

import numpy as np


def mean_pool(token_embeddings: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The sentence-transformers recipe: average of the real tokens' embeddings."""
    m = mask[..., None].astype(np.float32)
    return (token_embeddings * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
