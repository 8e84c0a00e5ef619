"""The checkpoint's own embedding after the encoder, in numpy: pooling (several modes concatenated),
Dense layers, Normalize, as sentence-transformers computes them (`contract.encoders.Pooling`). The
served postprocess and fused steps, the chatbot's FAQ embedding and the converter's parity check all
run this one class, so parity measures what is served.

Dense runs here and not in the exported graph. Measured (benchmarks/investigations/dense_placement.py,
BERT-base size, LaBSE's CLS -> Dense 768->768 tanh -> Normalize, 8 texts x 32 tokens, 2 shared cores,
2026-12-06): the numpy head 0.47 ms, the same head as an ONNX Runtime graph 0.19 ms, the encoder 811 ms.
In the graph would save 0.3 ms of 811 (0.03%); here the exported graph stays the plain transformers
export that every flavour and engine (TensorRT, PyTorch) shares, and one head serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonize.contract.encoders import DENSE_FILE, Pooling
from tritonize.runtime.pooling import l2_normalize, pool

ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # [out, in], as torch.nn.Linear stores it
    bias: np.ndarray | None
    activation: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return ACTIVATIONS[self.activation](y)

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez(buf, weight=self.weight.astype(np.float32), **({} if self.bias is None else {"bias": self.bias.astype(np.float32)}))
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path, activation: str) -> "DenseLayer":
        with np.load(path) as f:
            return cls(f["weight"], f["bias"] if "bias" in f.files else None, activation)


class EmbeddingHead:
    def __init__(self, pooling: Pooling, dense: list[DenseLayer] | None = None):
        self.pooling, self.dense = pooling, list(dense or [])
        if len(self.dense) != len(pooling.dense):
            raise ValueError(f"pooling names {len(pooling.dense)} Dense layers, {len(self.dense)} given")

    @classmethod
    def load(cls, pooling: Pooling, folder: Path) -> "EmbeddingHead":
        """The head a step serves: its Pooling parameters and the Dense files in its version folder."""
        return cls(pooling, [DenseLayer.load(Path(folder) / DENSE_FILE.format(i), a) for i, a in enumerate(pooling.dense)])

    def __call__(self, token_embeddings: np.ndarray, mask: np.ndarray, prompt_lengths: np.ndarray | None = None,
                 normalize: bool | None = None) -> np.ndarray:
        """`prompt_lengths`: per row, the prompt tokens to leave out where include_prompt is false (default:
        the default prompt's); `normalize`: None as the checkpoint (its Normalize module)."""
        p = self.pooling
        if not p.include_prompt:  # the prompt's tokens are not pooled
            lengths = np.full(len(mask), p.prompt_length) if prompt_lengths is None else prompt_lengths
            if lengths.any():
                mask = np.where(np.arange(mask.shape[1])[None] < lengths[:, None], 0, mask)
        x = np.concatenate([pool(token_embeddings, mask, m) for m in p.modes], axis=-1)
        for layer in self.dense:
            x = layer(x)
        return (l2_normalize(x) if (p.normalize if normalize is None else normalize) else x).astype(np.float32)
