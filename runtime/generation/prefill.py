"""Which admitted prompts share one prefill forward.

Prompts that join in the same engine step are padded to a common length and run together (one forward
instead of one per prompt). Two bounds keep that cheap: prompts are grouped by length so padding stays
within a ratio of the real tokens (the rule of `tritonize.runtime.buckets.plan_buckets`, which the
encoders use), and a group is cut so that rows x padded length never exceeds the token budget (`Limits.max_prefill_tokens`):
one forward's activations and its stall of the running batch stay bounded. A single prompt longer than
the budget runs alone.
"""

from __future__ import annotations

# Padding allowed in a shared forward: up to 1.25 x the real tokens, or 8 tokens per row if that is more.
# A forward has a fixed cost: GPT-2 small on ONNX Runtime, 2 threads, measured ~40 ms per forward plus
# ~3.5 ms per token (shared machine), so a row saves about 12 tokens' worth when it joins another's
# forward, and padding beyond that costs more than it saves.
MAX_PADDING_RATIO = 1.25
MIN_PADDING_TOKENS = 8


def plan_prefill(lengths: list[int], max_tokens: int, max_padding_ratio: float = MAX_PADDING_RATIO,
                 min_padding_tokens: int = MIN_PADDING_TOKENS) -> list[list[int]]:
    """Indices into `lengths`, one list per forward (within a forward, longest first), every index exactly
    once. Forwards come shortest first: the prompts of a step are prefilled one forward after another, and
    shortest-first delivers the most first tokens soonest.

    The padding rule is `plan_buckets`'s; the token budget is checked in the same pass (cutting its buckets
    afterwards would leave tails with more padding than the rule allows)."""
    if max_tokens < 1:
        raise ValueError(f"max_prefill_tokens must be >= 1 (1: every prompt in its own forward), got {max_tokens}")
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups:
            group = groups[-1]
            rows, padded = len(group) + 1, (len(group) + 1) * lengths[group[0]]
            total = real + lengths[i]
            if padded <= max_tokens and padded <= max(max_padding_ratio * total, total + min_padding_tokens * rows):
                group.append(i)
                real = total
                continue
        groups.append([i])
        real = lengths[i]
    return groups[::-1]
