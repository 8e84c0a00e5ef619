"""The tiny generators of the test run (built by tritonize.converters.generation.tiny) and the conftest builder
that converts them into the shared test repository. Tests assert that reference outputs vary across
prompts (a tiny random generator with default initialisation would not)."""

from __future__ import annotations

from pathlib import Path

from tritonize.converters.generation.tiny import GPT2_CONTEXT, build_tiny_gpt2, build_tiny_t5, train_byte_level_bpe, train_unigram  # noqa: F401

GPT2 = "tiny-gpt2"
GPT2_LIMITS = "tiny-gpt2-limits"  # same checkpoint, one slot and a queue of one (overload tests)
T5 = "tiny-t5"


def build_generators(repo: Path, work: Path) -> dict:
    """conftest BUILDERS entry: convert the tiny generators into the shared repository."""
    from tritonize.contract.generation import Limits
    from tritonize.converters.generation.gpt2 import convert_gpt2
    from tritonize.converters.generation.t5 import convert_t5

    gpt2 = build_tiny_gpt2(work / "tiny-gpt2")
    quiet = lambda m: None  # noqa: E731
    served = Limits(max_new_tokens=400, max_sequences=8, max_queue=16, intra_op_threads=1)
    convert_gpt2(str(gpt2), repo, GPT2, served, log=quiet)
    one_slot = Limits(max_new_tokens=400, max_sequences=1, max_queue=1, intra_op_threads=1)
    convert_gpt2(str(gpt2), repo, GPT2_LIMITS, one_slot, log=quiet)
    t5 = build_tiny_t5(work / "tiny-t5")
    convert_t5(str(t5), repo, T5, Limits(max_new_tokens=400, max_sequences=8, max_queue=16, intra_op_threads=1), log=quiet)
    return {"tiny_gpt2": gpt2, "tiny_t5": t5}
