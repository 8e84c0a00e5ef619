"""Postprocess: the checkpoint's embedding head (pooling, Dense, Normalize) for embeddings, softmax and
label names for classification. The functions serve both the ensemble's postprocess step and the fused
step (`fused.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonize.contract.encoders import Labels, Pooling
from tritonize.runtime.encoders.embedding_head import EmbeddingHead
from tritonize.runtime.pooling import softmax
from tritonize.runtime.triton import InputError, error_response, input_array, model_dir, parameters, response


def embedding_outputs(token_embeddings: np.ndarray, mask: np.ndarray, head: EmbeddingHead, prompt_lengths: np.ndarray | None = None,
                      normalize: bool | None = None) -> dict[str, np.ndarray]:
    # TOKEN_COUNT: the tokens each row really had (after truncation), for usage accounting.
    return {"EMBEDDING": head(token_embeddings, mask, prompt_lengths, normalize),
            "TOKEN_COUNT": mask.sum(axis=1, keepdims=True).astype(np.int64)}


def load_head(args: dict, params: dict[str, str]) -> EmbeddingHead:
    """The step's embedding head: its Pooling parameters and the Dense files in its own folder."""
    return EmbeddingHead.load(Pooling.from_params(params), Path(model_dir(args)))


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
        self.head = load_head(args, parameters(args))

    def process(self, request) -> dict[str, np.ndarray]:
        return embedding_outputs(input_array(request, "TOKEN_EMBEDDINGS"), input_array(request, "ATTENTION_MASK"), self.head)


class ClassificationPostprocess(_PerRequest):
    def initialize(self, args: dict) -> None:
        self.labels = label_array(parameters(args))

    def process(self, request) -> dict[str, np.ndarray]:
        return classification_outputs(input_array(request, "LOGITS"), self.labels)
