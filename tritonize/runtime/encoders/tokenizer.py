"""Tokenizer step: TEXT (one UTF-8 string per row) -> INPUT_IDS, ATTENTION_MASK.

Uses the checkpoint's own fast tokenizer (`tokenizer.json`, the Rust `tokenizers` library, no
transformers). Every request is validated on its own, so one bad request fails alone; the valid rows
of all requests in the execution are encoded in one call, then each request is padded to its own
longest row (never to another request's).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tritonize.contract.encoders import Prompts, Tokenizing
from tritonize.runtime.text_inputs import decode_texts, pad_rows
from tritonize.runtime.triton import Counter, InputError, error_response, input_array, model_dir, parameters, response


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()  # we pad per request, see pad_rows
    return tok


def refuse_options(request) -> None:
    """Per-request embedding options (prompt_name, dimensions, normalize, truncate) are the fused step's:
    across the ensemble's three steps they would be applied in part."""
    params = request.parameters()
    if params and params != "{}":
        names = ", ".join(sorted(json.loads(params)))
        raise InputError(f"request parameters {names} are served by the fused flavour (the default on CPU); this pipeline is "
                         "the three-step ensemble: convert it with --flavour fused to use them")


class TokenizerStep:
    def initialize(self, args: dict) -> None:
        p = parameters(args)
        c = Tokenizing.from_params(p)
        self.prompt = Prompts.from_params(p).default_prompt  # prepended to every text, as sentence-transformers does
        self.max_length, self.max_text_bytes, self.pad_id = c.max_length, c.max_text_bytes, c.pad_token_id
        self.pad_multiple, self.token_type_ids = c.pad_to_multiple_of, c.emit_token_type_ids
        self.tokenizer = load_tokenizer(Path(model_dir(args)) / "tokenizer.json", self.max_length)
        self.truncated = Counter(
            "tritonize_truncated_texts_total", "Texts cut to the model's maximum length", {"model": args["model_name"]}
        )

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batch: list[tuple[int, list[str]]] = []
        for i, request in enumerate(requests):
            try:
                refuse_options(request)
                batch.append((i, decode_texts(input_array(request, "TEXT"), self.max_text_bytes)))
            except InputError as e:
                responses[i] = error_response(e)
        if batch:
            encodings = self.tokenizer.encode_batch([self.prompt + t for _, texts in batch for t in texts])
            self.truncated.add(sum(1 for e in encodings if e.overflowing))
            start = 0
            for i, texts in batch:
                rows = [e.ids for e in encodings[start : start + len(texts)]]
                start += len(texts)
                ids, mask = pad_rows(rows, self.pad_id, self.pad_multiple, self.max_length)
                outputs = {"INPUT_IDS": ids, "ATTENTION_MASK": mask}
                if self.token_type_ids:
                    outputs["TOKEN_TYPE_IDS"] = np.zeros_like(ids)
                responses[i] = response(outputs)
        return responses
