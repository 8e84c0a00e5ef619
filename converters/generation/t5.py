"""T5 (encoder-decoder) -> ONNX encoder + decoder + decoder with past -> a served, streaming generator.

Optimum's `text2text-generation-with-past` export gives the encoder and the decoder's first step (which
also returns the cross-attention keys/values). Its cached decoder step has no decoder attention mask, so
rows of different decoder lengths could not share a forward; `t5_step` exports that step
again with a mask, from the same model. Parity: logits of the first decoder step and of a cached step
against PyTorch, on prompts of several lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonize.converters.generation.common import VALIDATION_PROMPTS, GenerationConversion, check_parity

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


class T5Conversion(GenerationConversion):
    model_family = "t5"

    def export(self, tmp: Path) -> None:
        from optimum.exporters.onnx import main_export
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from tritonize.converters.generation.t5_step import export_masked_step

        name, model = self.name, self.model
        self.tokenizer = tokenizer = AutoTokenizer.from_pretrained(self.source)
        if not tokenizer.is_fast:
            raise ValueError(f"{model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
        self.torch_model = AutoModelForSeq2SeqLM.from_pretrained(self.source).eval()
        config = self.torch_model.config
        self.start = self.decoder_start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
        self.max_context = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else DEFAULT_CONTEXT
        self.eos, self.tmp = config.eos_token_id, tmp
        self.out = out = tmp / "export"
        self.log(f"{name}: exporting {model} to ONNX ({TASK}: encoder and first decoder step; the cached step with a decoder mask)")
        main_export(self.source, out, task=TASK, library_name="transformers", do_validation=False)
        export_masked_step(self.torch_model, out / "decoder_step.onnx")
        self.files = {g: out / g for g in GRAPHS}

    def parity(self) -> None:
        self.errors = parity(self.out, self.torch_model, self.tokenizer, self.decoder_start)
        check_parity(self.name, *self.errors, self.tolerance, self.log)


convert_t5 = T5Conversion.convert
