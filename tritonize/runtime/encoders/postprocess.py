"""Postprocess: pooling for embeddings, softmax and label names for classification. The functions
serve both the ensemble's postprocess step and the fused step (`fused.py`)."""

from __future__ import annotations

import numpy as np

from tritonize.contract.encoders import Labels, Pooling
from tritonize.runtime.pooling import l2_normalize, mean_pool, softmax
from tritonize.runtime.triton import InputError, error_response, input_array, parameters, response


def embedding_outputs(token_embeddings: np.ndarray, mask: np.ndarray, normalize: bool) -> dict[str, np.ndarray]:
    pooled = mean_pool(token_embeddings, mask)
    # TOKEN_COUNT: the tokens each row really had (after truncation), for usage accounting.
    return {"EMBEDDING": (l2_normalize(pooled) if normalize else pooled).astype(np.float32),
            "TOKEN_COUNT": mask.sum(axis=1, keepdims=True).astype(np.int64)}


def classification_outputs(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    logits = logits.astype(np.float32)
    return {"LOGITS": logits, "PROBABILITIES": softmax(logits), "LABEL": labels[logits.argmax(axis=-1)].reshape(-1, 1)}


def label_array(params: dict[str, str]) -> np.ndarray:
    """The `labels` parameter as the BYTES array LABEL is drawn from."""
    return np.array([s.encode() for s in Labels.from_params(params).labels], dtype=object)


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
        self.normalize = Pooling.from_params(parameters(args)).normalize

    def process(self, request) -> dict[str, np.ndarray]:
        return embedding_outputs(input_array(request, "TOKEN_EMBEDDINGS"), input_array(request, "ATTENTION_MASK"), self.normalize)


class ClassificationPostprocess(_PerRequest):
    def initialize(self, args: dict) -> None:
        self.labels = label_array(parameters(args))

    def process(self, request) -> dict[str, np.ndarray]:
        return classification_outputs(input_array(request, "LOGITS"), self.labels)
