"""Which admitted prompts share one prefill forward.

Prompts that join in the same engine step are padded to a common length and run together (one forward
instead of one per prompt). Two bounds keep that cheap: prompts are grouped by length so padding stays
within a ratio of the real tokens (the rule of `tritonize.runtime.buckets.plan_buckets`, which the
encoders use), and a group is cut so that rows x padded length never exceeds the token budget (`Limits.max_prefill_tokens`):
one forward's activations and its stall of the running batch stay bounded. A single prompt longer than
the budget runs alone.
"""

from __future__ import annotations

# A prompt forward's fixed cost on a CPU in tokens' worth of compute: GPT-2 small on ONNX Runtime, 2
# threads, measured ~40 ms per forward plus ~3.5 ms per token (shared machine). A row saves about that
# much when it joins another's forward; padding beyond it costs more than it saves.
CPU_PREFILL_OVERHEAD_TOKENS = 12
# Padding allowed in a shared forward: up to 1.25 x the real tokens, or 8 tokens per row if that is more.
MAX_PADDING_RATIO = 1.25
MIN_PADDING_TOKENS = 8


def plan_prefill(lengths: list[int], max_tokens: int, overhead_tokens: float | None = None,
                 max_padding_ratio: float = MAX_PADDING_RATIO, min_padding_tokens: int = MIN_PADDING_TOKENS) -> list[list[int]]:
    """Indices into `lengths`, one list per forward (within a forward, longest first), every index exactly
    once. Forwards come shortest first: the prompts of a step are prefilled one forward after another, and
    shortest-first delivers the most first tokens soonest.

    The padding rule is `plan_buckets`'s; the token budget is checked in the same pass (cutting its buckets
    afterwards would leave tails with more padding than the rule allows). `overhead_tokens`: a forward's
    fixed cost in tokens' worth of compute (None: fixed cost dominates, as on a GPU; share whenever the
    other bounds allow). Given it, a prompt joins a forward only if that does not raise the summed time to
    first token: with a forward costing overhead + rows x width, a prompt of length L joining n rows of
    width W (rather than running alone, just before them) lowers the sum iff (2n + 1) W - (n + 1) L < n x
    overhead; for equal lengths, iff L < overhead. On a CPU, where a token's compute is large next to the
    fixed cost, long prompts then keep their own forwards (sharing saves compute but makes the first rows
    wait for the last)."""
    if max_tokens < 1:
        raise ValueError(f"max_prefill_tokens must be >= 1 (1: every prompt in its own forward), got {max_tokens}")
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups:
            group = groups[-1]
            n, width = len(group), lengths[group[0]]
            padded, total = (n + 1) * width, real + lengths[i]
            fits = padded <= max_tokens and padded <= max(max_padding_ratio * total, total + min_padding_tokens * (n + 1))
            sooner = overhead_tokens is None or (2 * n + 1) * width - (n + 1) * lengths[i] < n * overhead_tokens
            if fits and sooner:
                group.append(i)
                real = total
                continue
        groups.append([i])
        real = lengths[i]
    return groups[::-1]
