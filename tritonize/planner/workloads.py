"""Text workloads shared by the benchmarks: fixed token lengths and a realistic, seeded length mix."""

from __future__ import annotations

import random

WORDS = (
    "time person year way day thing man world life hand part child eye woman place work week case point "
    "government company number group problem fact service order price model server request latency queue "
    "replica batch token answer question system network memory engine report market team water money story"
).split()


def fixed_tokens(tokenizer, n_tokens: int, count: int, seed: int = 0) -> list[str]:
    """Texts that tokenize to exactly n_tokens (special tokens included) with the given tokenizer."""
    rng = random.Random(seed)
    single = [w for w in WORDS if len(tokenizer.encode(w, add_special_tokens=False)) == 1]
    special = len(tokenizer.encode("", add_special_tokens=True))
    texts = [" ".join(rng.choices(single, k=n_tokens - special)) for _ in range(count)]
    assert all(len(tokenizer.encode(t)) == n_tokens for t in texts)
    return texts


def mixed_lengths(count: int, seed: int = 0, low: int = 4, high: int = 64) -> list[str]:
    """A realistic mix: word counts log-normal around 14 words, clipped to [low, high]."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n = min(high, max(low, int(rng.lognormvariate(2.65, 0.6))))
        texts.append(" ".join(rng.choices(WORDS, k=n)).capitalize() + ".")
    return texts
