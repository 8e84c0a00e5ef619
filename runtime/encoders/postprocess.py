"""Postprocess steps: pooling for embeddings, softmax and label names for classification."""

from __future__ import annotations

import json

import numpy as np

from tritonize.runtime.pooling import l2_normalize, mean_pool, softmax
from tritonize.runtime.triton import InputError, error_response, input_array, parameters, response


class _PerRequest:
    """Postprocessing is cheap and row-wise: handle each request on its own, failures stay local."""

    def execute(self, requests):
        out = []
        for request in requests:
            try:
                out.append(response(self.process(request)))
            except InputError as e:
                out.append(error_response(e))
        return out


class EmbeddingPostprocess(_PerRequest):
    def initialize(self, args: dict) -> None:
        self.normalize = parameters(args).get("normalize", "true") == "true"

    def process(self, request) -> dict[str, np.ndarray]:
        mask = input_array(request, "ATTENTION_MASK")
        pooled = mean_pool(input_array(request, "TOKEN_EMBEDDINGS"), mask)
        # TOKEN_COUNT: the tokens each row really had (after truncation), for usage accounting.
        return {"EMBEDDING": (l2_normalize(pooled) if self.normalize else pooled).astype(np.float32),
                "TOKEN_COUNT": mask.sum(axis=1, keepdims=True).astype(np.int64)}


class ClassificationPostprocess(_PerRequest):
    def initialize(self, args: dict) -> None:
        self.labels = np.array([s.encode() for s in json.loads(parameters(args)["labels"])], dtype=object)

    def process(self, request) -> dict[str, np.ndarray]:
        logits = input_array(request, "LOGITS").astype(np.float32)
        return {
            "LOGITS": logits,
            "PROBABILITIES": softmax(logits),
            "LABEL": self.labels[logits.argmax(axis=-1)].reshape(-1, 1),
        }
