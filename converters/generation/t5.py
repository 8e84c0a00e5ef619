"""T5 (encoder-decoder) -> ONNX encoder + decoder + decoder with past -> a served, streaming generator.

Optimum's `text2text-generation-with-past` export gives the encoder and the decoder's first step (which
also returns the cross-attention keys/values). Its cached decoder step has no decoder attention mask, so
rows of different decoder lengths could not share a forward; `t5_step` exports that step
again with a mask, from the same model. Parity: logits of the first decoder step and of a cached step
against PyTorch, on prompts of several lengths.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.converters.checkpoints import fingerprint, resolve, served_name
from tritonize.converters.generation.common import (
    LOGITS_TOLERANCE, VALIDATION_PROMPTS, GenerationLimits, GenerationReport, check_parity,
    chat_parameters, previous_report, served_parameters, write_generator,
)

TASK = "text2text-generation-with-past"
GRAPHS = ("encoder_model.onnx", "decoder_model.onnx", "decoder_step.onnx")  # the last: our masked cached step
DEFAULT_CONTEXT = 512  # T5's positions are relative; this bounds the prompt (its tokenizer's own limit)


def parity(folder: Path, model, tokenizer, start: int) -> tuple[float, float, float]:
    import onnxruntime as ort
    import torch

    encoder, first_step, with_past = (ort.InferenceSession(str(folder / g), providers=["CPUExecutionProvider"]) for g in GRAPHS)
    past_names = [i.name for i in with_past.get_inputs() if i.name.startswith("past_key_values.")]
    present_names = [n.replace("past_key_values", "present") for n in past_names]
    first = cached = scale = 0.0
    for prompt in VALIDATION_PROMPTS:
        ids = np.asarray([tokenizer(prompt).input_ids], np.int64)
        mask = np.ones_like(ids)
        hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        start_ids = np.asarray([[start]], np.int64)
        out = dict(zip([o.name for o in first_step.get_outputs()], first_step.run(
            None, {"input_ids": start_ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})))
        with torch.inference_mode():
            enc = model.get_encoder()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            ref = model(encoder_outputs=enc, attention_mask=torch.from_numpy(mask), decoder_input_ids=torch.from_numpy(start_ids), use_cache=True)
            first = max(first, float(np.abs(out["logits"] - ref.logits.numpy()).max()))
            scale = max(scale, float(ref.logits.abs().max()))
            nxt = np.asarray([[int(ref.logits[0, -1].argmax())]], np.int64)
            step = model(encoder_outputs=enc, attention_mask=torch.from_numpy(mask), decoder_input_ids=torch.from_numpy(nxt),
                         past_key_values=ref.past_key_values, use_cache=True)
        feed = {"input_ids": nxt, "decoder_attention_mask": np.ones((1, 2), np.int64), "encoder_attention_mask": mask,
                **{p: out[q] for p, q in zip(past_names, present_names)}}
        logits = with_past.run(["logits"], feed)[0]
        cached = max(cached, float(np.abs(logits - step.logits.numpy()).max()))
    return first, cached, scale


def convert_t5(
    model: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    limits: GenerationLimits | None = None,
    tolerance: float = LOGITS_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> GenerationReport:
    name = served_name(model, name)  # checked before anything is written
    started = time.monotonic()
    source = resolve(model)
    repository = Path(repository)
    limits = limits or GenerationLimits()
    key = fingerprint(source, {"family": "t5", "limits": asdict(limits)}, "generation")
    if not force and (report := previous_report(repository, name, key)):
        log(f"{name}: reusing {repository / name} (same source and options)")
        return report

    from optimum.exporters.onnx import main_export
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tritonize.converters.generation.t5_step import export_masked_step

    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise ValueError(f"{model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
    torch_model = AutoModelForSeq2SeqLM.from_pretrained(source).eval()
    config = torch_model.config
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
    max_context = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else DEFAULT_CONTEXT

    with tempfile.TemporaryDirectory(prefix="tritonize-t5-") as tmp:
        out = Path(tmp) / "export"
        log(f"{name}: exporting {model} to ONNX ({TASK}: encoder and first decoder step; the cached step with a decoder mask)")
        main_export(source, out, task=TASK, library_name="transformers", do_validation=False)
        export_masked_step(torch_model, out / "decoder_step.onnx")
        first, cached, scale = parity(out, torch_model, tokenizer, start)
        check_parity(name, first, cached, scale, tolerance, log)
        tokenizer.backend_tokenizer.save(str(Path(tmp) / "tokenizer.json"))
        params = {**served_parameters("encoder-decoder", max_context, limits, config.eos_token_id, start), **chat_parameters(tokenizer)}
        report = GenerationReport(
            name=name, family="t5", source=str(model), repository=str(repository), reused=False,
            max_abs_error_first_step=first, max_abs_error_cached_step=cached, tolerance=tolerance, logits_scale=scale,
            max_context=max_context, limits=params, seconds=round(time.monotonic() - started, 1),
        )
        files = {g: out / g for g in GRAPHS}
        files["tokenizer.json"] = Path(tmp) / "tokenizer.json"
        write_generator(repository, name, params, files, report, key)
    log(f"{name}: wrote {repository / name} in {report.seconds:.0f} s")
    return report
