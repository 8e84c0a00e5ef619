"""The fused encoder step (CPU flavour `fused`): TEXT -> tokens -> engine -> EMBEDDING / LABEL in one
Python-backend model, the same request/response contract as the three-step ensemble.

On CPU every step of the ensemble costs a request an IPC round trip to a stub process (~0.5-0.7 ms
each, measured) and every tensor a copy through shared memory; here a request crosses one. The work
is the ensemble's, in one place: the tokenizer's checks and batched encoding, the length buckets of
the model step (`BucketRunner`), and pooling per bucket, so per-token hidden states are never copied
out. One bad request fails alone; the others in the execution are served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonize.contract.encoders import GRAPH_OUTPUT, EmbedOptions, Pooling, Prompts, Served, Tokenizing
from tritonize.runtime.encoders.embed_options import EmbeddingRequests
from tritonize.runtime.encoders.encoder import BucketRunner, Rows
from tritonize.runtime.encoders.postprocess import classification_outputs, embedding_outputs, label_array, load_head
from tritonize.runtime.encoders.tokenizer import load_tokenizer
from tritonize.runtime.text_inputs import decode_texts
from tritonize.runtime.triton import Counter, InputError, error_response, input_array, model_dir, parameters, response


class FusedEncoderStep:
    def initialize(self, args: dict) -> None:
        p = parameters(args)
        self.task = Served.from_params(p).task
        tokenizing = Tokenizing.from_params(p)
        self.max_text_bytes = tokenizing.max_text_bytes
        self.tokenizer = load_tokenizer(Path(model_dir(args)) / "tokenizer.json", tokenizing.max_length)
        self.runner = BucketRunner(args, p, GRAPH_OUTPUT[self.task])
        self.head = load_head(args, p) if self.task == "embedding" else None
        # Per request: its prompt (the default one unless it names another), dimensions, normalize, truncate.
        self.requests = EmbeddingRequests(self.tokenizer, Prompts.from_params(p), Pooling.from_params(p), tokenizing.max_length)
        self.labels = label_array(p) if self.task == "classification" else None
        self.truncated = Counter("tritonize_truncated_texts_total", "Texts cut to the model's maximum length", {"model": args["model_name"]})

    def postprocess(self, out: np.ndarray, mask: np.ndarray, prompt_lengths: np.ndarray) -> dict[str, np.ndarray]:
        if self.task == "embedding":  # un-normalised here: each request's options finish its rows
            assert self.head is not None
            return embedding_outputs(out, mask, self.head, prompt_lengths, normalize=False)
        return classification_outputs(out, self.labels)

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batch: list[tuple[int, int]] = []  # (request index, rows)
        texts: list[str] = []
        options: dict[int, EmbedOptions] = {}
        prompt_length: dict[int, int] = {}
        for i, request in enumerate(requests):
            try:
                mine = decode_texts(input_array(request, "TEXT"), self.max_text_bytes)
                options[i] = self.requests.options(request) if self.task == "embedding" else EmbedOptions()
            except InputError as e:
                responses[i] = error_response(e)
                continue
            prompt = options[i].prompt(self.requests.prompts) if self.task == "embedding" else ""
            prompt_length[i] = self.requests.prompt_length(prompt)
            batch.append((i, len(mine)))
            texts.extend(prompt + t for t in mine)
        if not batch:
            return responses
        encodings = self.tokenizer.encode_batch(texts)
        self.truncated.add(sum(1 for e in encodings if e.overflowing))
        batch, encodings = self.drop_overlong(batch, encodings, responses, options)
        batch, encodings = self.drop_tokenless(batch, encodings, responses)
        if not batch:
            return responses
        rows = Rows.of_texts(encodings)
        try:
            results = self.runner.run(rows)
        except Exception as e:  # e.g. out of memory: this execution's requests fail, the step keeps serving
            for i, _ in batch:
                responses[i] = error_response(e)
            return responses
        rows_prompt = np.array([prompt_length[i] for i, n in batch for _ in range(n)], dtype=np.int64)
        merged: dict[str, np.ndarray] = {}
        for bucket, mask, out in results:
            for name, values in self.postprocess(out, mask, rows_prompt[bucket]).items():
                if name not in merged:
                    merged[name] = np.empty((len(encodings), *values.shape[1:]), dtype=values.dtype)
                merged[name][bucket] = values
        start = 0
        for i, n in batch:
            mine = {k: v[start : start + n] for k, v in merged.items()}
            start += n
            try:
                if self.task == "embedding":
                    mine["EMBEDDING"] = self.requests.finish(mine["EMBEDDING"], options[i])
            except ValueError as e:  # dimensions past this model's size
                responses[i] = error_response(InputError(str(e)))
                continue
            responses[i] = response(mine)
        return responses

    def drop_overlong(self, batch, encodings, responses, options):
        """A request with truncate=false and a text over the limit fails alone."""
        kept_batch, kept, start = [], [], 0
        for i, n in batch:
            mine = encodings[start : start + n]
            start += n
            try:
                self.requests.refuse_overlong(options[i], mine)
            except InputError as e:
                responses[i] = error_response(e)
                continue
            kept_batch.append((i, n))
            kept.extend(mine)
        return kept_batch, kept

    @staticmethod
    def drop_tokenless(batch, encodings, responses):
        """A text that tokenizes to nothing (a tokenizer without special tokens, an empty string) fails
        its own request; the engine never sees an empty row."""
        kept_batch, kept, start = [], [], 0
        for i, n in batch:
            mine = encodings[start : start + n]
            start += n
            empty = next((r for r, e in enumerate(mine) if not e.ids), None)
            if empty is None:
                kept_batch.append((i, n))
                kept.extend(mine)
            else:
                responses[i] = error_response(InputError(f"TEXT[{empty}] has no tokens: send text the tokenizer can encode"))
        return kept_batch, kept
