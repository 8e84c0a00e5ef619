"""GPT-2 and T5 for the PyTorch engine (`tritonize convert gpt2|t5 --device cpu|cuda`): the same
decoupled generator as the ONNX flavour, with the step building the model from the stored config and
weights (safetensors) and keeping the KV cache as torch tensors. No export: the check is that the
stored copy, reloaded the way the step loads it, gives PyTorch's logits for the first and a cached
step on the same prompts and tolerance as the ONNX path. The served engine's own forwards (batched
rows, left-padded caches) are checked by the tests against Hugging Face `generate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.contract.generation import Limits
from tritonize.converters.device import Placement, save_weights
from tritonize.converters.generation.common import (
    LOGITS_TOLERANCE, VALIDATION_PROMPTS, GenerationConversion, GenerationReport, check_parity,
)

FAMILIES = {"gpt2": "decoder", "t5": "encoder-decoder"}
DEFAULT_T5_CONTEXT = 512  # as converters/generation/t5.py


def hf_steps(model, ids: np.ndarray, start: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the first step (prompt forward, or T5's first decoder step) and of one cached step."""
    import torch

    x = torch.from_numpy(ids)
    with torch.inference_mode():
        if start is None:
            first = model(x, use_cache=True)
            nxt = first.logits[:, -1:].argmax(-1)
            cached = model(nxt, past_key_values=first.past_key_values, use_cache=True)
        else:
            mask = torch.ones_like(x)
            enc = model.get_encoder()(input_ids=x, attention_mask=mask)
            first = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=torch.tensor([[start]]), use_cache=True)
            nxt = first.logits[:, -1:].argmax(-1)
            cached = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=nxt, past_key_values=first.past_key_values, use_cache=True)
    return first.logits.numpy(), cached.logits.numpy()


class GeneratorWeightsConversion(GenerationConversion):
    with_chat_template = False

    def __init__(self, family: str, model: str, repository: Path, name: str | None, limits: Limits, placement: Placement,
                 tolerance: float, force: bool, log: Callable[[str], None]):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
        placement.check_torch("convert_generator_torch", "convert_gpt2/convert_t5")  # before any work
        self.model_family, self.placement = family, placement
        super().__init__(model, repository, name, limits, tolerance, force, log)

    def export(self, tmp: Path) -> None:
        """No export: the checkpoint's weights, stored as the step loads them."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        family, model = self.model_family, self.model
        cls = AutoModelForCausalLM if family == "gpt2" else AutoModelForSeq2SeqLM
        self.tokenizer = tokenizer = AutoTokenizer.from_pretrained(self.source)
        if not tokenizer.is_fast:
            raise ValueError(f"{model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
        self.reference = cls.from_pretrained(self.source).eval()
        config = self.reference.config
        if config.model_type != family:
            raise ValueError(f"{model} is a {config.model_type!r} model; `convert {family}` takes {family} checkpoints")
        if family == "gpt2":
            self.max_context = int(getattr(config, "n_positions", getattr(config, "max_position_embeddings", 1024)))
        else:
            self.start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
            self.max_context = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else DEFAULT_T5_CONTEXT
        self.eos, self.tmp = config.eos_token_id, tmp
        self.log(f"{self.name}: storing {model} for the PyTorch engine ({self.placement.device}, {self.placement.dtype})")
        self.files = save_weights(self.reference, tokenizer, tmp / "torch")
        self.stored = cls.from_pretrained(str(tmp / "torch"), local_files_only=True).eval()

    def parity(self) -> None:
        """The stored copy, reloaded the way the step loads it, against the checkpoint."""
        first = cached = scale = 0.0
        for prompt in VALIDATION_PROMPTS:
            ids = np.asarray([self.tokenizer(prompt).input_ids], np.int64)
            (ref_first, ref_cached), (got_first, got_cached) = hf_steps(self.reference, ids, self.start), hf_steps(self.stored, ids, self.start)
            first = max(first, float(np.abs(got_first - ref_first).max()))
            cached = max(cached, float(np.abs(got_cached - ref_cached).max()))
            scale = max(scale, float(np.abs(ref_first).max()))
        self.errors = (first, cached, scale)
        check_parity(self.name, first, cached, scale, self.tolerance, self.log)


def convert_generator_torch(
    family: str,
    model: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    limits: Limits | None = None,
    placement: Placement = Placement("cpu"),
    tolerance: float = LOGITS_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> GenerationReport:
    return GeneratorWeightsConversion(family, model, Path(repository), name, limits or Limits(), placement, tolerance, force, log).run()
