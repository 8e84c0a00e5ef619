"""The contract between the generation engine loop and a model, and which model a served step loads.

The loop (`engine.py`) is device-agnostic: it asks a model for prompt forwards (prefill) and for one
decode forward over the newest token of every running sequence, and samples from numpy logits. Two
implementations keep this contract: ONNX Runtime graphs on CPU (`engine_onnx.py`) and the PyTorch
models with the KV cache as torch tensors on CPU or CUDA (`engine_torch.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from tritonize.contract.engines import EngineSpec
from tritonize.contract.generation import Generator
from tritonize.runtime.generation.cache import CacheSlot


class GenerationModel(Protocol):
    decoder_only: bool

    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, CacheSlot]:
        """One prompt's forward: logits of its next token [vocab] and its cache."""

    def groups(self, slots: dict[int, CacheSlot]) -> list[list[int]]:
        """Which running sequences share a decode forward."""

    def decode(self, members: list[int], slots: dict[int, CacheSlot], tokens: list[int]) -> np.ndarray:
        """One forward over each member's newest token: logits [members, vocab]; caches advance by one."""

    def forget(self) -> None:
        """Drop the running batch's cache (nothing is running)."""


def load_model(folder: Path, params: dict[str, str], args: dict | None = None) -> GenerationModel:
    """A model may also offer `prefill_many(prompts)`: several prompts in one forward (both engines do)."""
    spec, generator = EngineSpec.from_params(params), Generator.from_params(params)
    start = None if generator.decoder_only else generator.decoder_start_token_id  # an encoder-decoder always has one
    if spec.torch:
        from tritonize.runtime.generation.engine_torch import TorchCausalLM, TorchSeq2SeqLM

        return TorchCausalLM(folder, spec, args) if start is None else TorchSeq2SeqLM(folder, spec, start, args)
    from tritonize.runtime.generation.engine_onnx import CausalLM, Seq2SeqLM

    return CausalLM(folder, spec.threads) if start is None else Seq2SeqLM(folder, spec.threads, start)
