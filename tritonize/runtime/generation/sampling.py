"""Choosing the next token from one row of logits, in Hugging Face's order of processors:
repetition penalty, then (sampling only) temperature, top-k, top-p. Greedy when temperature is 0."""

from __future__ import annotations

import numpy as np

from tritonize.runtime.generation.params import SamplingParams


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """Make tokens already in the prompt or output less likely (divide positive logits, multiply negative)."""
    if penalty == 1.0 or seen.size == 0:
        return logits
    logits = logits.copy()
    ids = np.unique(seen)
    values = logits[ids]
    logits[ids] = np.where(values > 0, values / penalty, values * penalty)
    return logits


def sample_probabilities(logits: np.ndarray, p: SamplingParams) -> np.ndarray:
    """The distribution to sample from after temperature, top-k and top-p (float64, sums to 1)."""
    scaled = logits.astype(np.float64) / p.temperature
    if 0 < p.top_k < scaled.size:
        kth = np.partition(scaled, -p.top_k)[-p.top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if p.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = int(np.searchsorted(cumulative, p.top_p)) + 1  # the smallest head reaching top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[:keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def next_token(logits: np.ndarray, seen: np.ndarray, p: SamplingParams, rng: np.random.Generator) -> int:
    logits = apply_repetition_penalty(logits, seen, p.repetition_penalty)
    if p.temperature == 0.0:
        return int(np.argmax(logits))
    probs = sample_probabilities(logits, p)
    # Inverse CDF with one uniform draw: the same seed gives the same tokens whatever the batch.
    index = int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), side="right"))
    return min(index, probs.size - 1)
