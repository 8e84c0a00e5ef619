"""GPT-2 and T5 for the PyTorch engine (`tritonize convert gpt2|t5 --device cpu|cuda`): the same
decoupled generator as the ONNX flavour, with the step building the model from the stored config and
weights (safetensors) and keeping the KV cache as torch tensors. No export: the check is that the
stored copy, reloaded the way the step loads it, gives PyTorch's logits for the first and a cached
step on the same prompts and tolerance as the ONNX path. The served engine's own forwards (batched
rows, left-padded caches) are checked by the tests against Hugging Face `generate`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.converters.checkpoints import fingerprint, resolve, served_name
from tritonize.converters.device import Placement, save_weights
from tritonize.converters.generation.common import (
    LOGITS_TOLERANCE, VALIDATION_PROMPTS, GenerationLimits, GenerationReport, check_parity, previous_report,
    served_parameters, write_generator,
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


def convert_generator_torch(
    family: str,
    model: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    limits: GenerationLimits | None = None,
    placement: Placement = Placement("cpu"),
    tolerance: float = LOGITS_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> GenerationReport:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    if not placement.torch:
        raise ValueError("convert_generator_torch needs a device (cpu or cuda); convert_gpt2/convert_t5 write the ONNX flavour")
    placement.check_available()  # before any work
    started = time.monotonic()
    source, name, repository = resolve(model), served_name(model, name), Path(repository)
    limits = limits or GenerationLimits()
    key = fingerprint(source, {"family": family, "limits": asdict(limits), **placement.options()}, "generation")
    if not force and (report := previous_report(repository, name, key)):
        log(f"{name}: reusing {repository / name} (same source and options)")
        return report

    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    cls = AutoModelForCausalLM if family == "gpt2" else AutoModelForSeq2SeqLM
    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise ValueError(f"{model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
    reference = cls.from_pretrained(source).eval()
    config = reference.config
    if config.model_type != family:
        raise ValueError(f"{model} is a {config.model_type!r} model; `convert {family}` takes {family} checkpoints")
    if family == "gpt2":
        start = None
        max_context = int(getattr(config, "n_positions", getattr(config, "max_position_embeddings", 1024)))
    else:
        start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
        max_context = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else DEFAULT_T5_CONTEXT

    with tempfile.TemporaryDirectory(prefix=f"tritonize-{family}-torch-") as tmp:
        tmp = Path(tmp)
        log(f"{name}: storing {model} for the PyTorch engine ({placement.device}, {placement.dtype})")
        weights = save_weights(reference, tokenizer, tmp / "torch")
        stored = cls.from_pretrained(str(tmp / "torch"), local_files_only=True).eval()
        first = cached = scale = 0.0
        for prompt in VALIDATION_PROMPTS:
            ids = np.asarray([tokenizer(prompt).input_ids], np.int64)
            (ref_first, ref_cached), (got_first, got_cached) = hf_steps(reference, ids, start), hf_steps(stored, ids, start)
            first = max(first, float(np.abs(got_first - ref_first).max()))
            cached = max(cached, float(np.abs(got_cached - ref_cached).max()))
            scale = max(scale, float(np.abs(ref_first).max()))
        check_parity(name, first, cached, scale, tolerance, log)
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        params = served_parameters(FAMILIES[family], max_context, limits, config.eos_token_id, start)
        report = GenerationReport(
            name=name, family=family, source=str(model), repository=str(repository), reused=False,
            max_abs_error_first_step=first, max_abs_error_cached_step=cached, tolerance=tolerance, logits_scale=scale,
            max_context=max_context, limits=params, seconds=round(time.monotonic() - started, 1),
            engine="torch", device=placement.device, dtype=placement.dtype,
        )
        files = {**weights, "tokenizer.json": tmp / "tokenizer.json"}
        write_generator(repository, name, params, files, report, key, placement)
    log(f"{name}: wrote {repository / name} (PyTorch engine) in {report.seconds:.0f} s")
    return report
