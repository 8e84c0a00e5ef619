"""An embedding request's options (`contract.encoders.EmbedOptions`, sent as Triton request parameters)
applied by the fused step: the prompt prepended to its texts (the named one or the checkpoint's
default), how many of its tokens the pooling leaves out, a refusal instead of truncation, and the
Matryoshka cut with re-normalisation."""

from __future__ import annotations

import json

import numpy as np

from tritonize.contract.encoders import EmbedOptions, Pooling, Prompts
from tritonize.runtime.pooling import l2_normalize
from tritonize.runtime.triton import InputError


class EmbeddingRequests:
    def __init__(self, tokenizer, prompts: Prompts, pooling: Pooling, max_length: int):
        self.tokenizer, self.prompts, self.pooling, self.max_length = tokenizer, prompts, pooling, max_length
        self.special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self._prompt_lengths: dict[str, int] = {}

    def options(self, request) -> EmbedOptions:
        try:
            options = EmbedOptions.from_request(json.loads(request.parameters() or "{}"))
            options.prompt(self.prompts)  # an unknown prompt name fails here, naming the known ones
        except (TypeError, ValueError) as e:
            raise InputError(str(e)) from None
        return options

    def prompt_length(self, prompt: str) -> int:
        """Tokens of `prompt` left out of the pooling where include_prompt is false: as sentence-transformers
        counts them (the prompt encoded alone, a trailing special token not counted)."""
        if self.pooling.include_prompt or not prompt:
            return 0
        if prompt not in self._prompt_lengths:
            ids = self.tokenizer.encode(prompt).ids
            self._prompt_lengths[prompt] = len(ids) - (1 if ids and ids[-1] in self.special else 0)
        return self._prompt_lengths[prompt]

    def refuse_overlong(self, options: EmbedOptions, encodings) -> None:
        if options.truncate:
            return
        over = next((r for r, e in enumerate(encodings) if e.overflowing), None)
        if over is not None:
            raise InputError(f"TEXT[{over}] is longer than the model's limit of {self.max_length} tokens and truncate is false: "
                             "send a shorter text, or truncate=true to cut it")

    def finish(self, pooled: np.ndarray, options: EmbedOptions) -> np.ndarray:
        """The head's un-normalised vectors -> the first `dimensions`, normalised where asked (or where the
        checkpoint normalises)."""
        options.check_dimensions(pooled.shape[1])
        if options.dimensions is not None:
            pooled = pooled[:, : options.dimensions]
        normalize = self.pooling.normalize if options.normalize is None else options.normalize
        return np.ascontiguousarray(l2_normalize(pooled) if normalize else pooled, dtype=np.float32)
