"""The FAQ a chatbot answers from, as the converter stored it, and its search index.

Files (in the chatbot's version folder): `faq.jsonl` (id, question, answer per line, in row order),
`embeddings.npy` (float32 [rows, dims], L2-normalised question vectors from the embedder) and, for
`index=faiss`, `index.faiss` (an HNSW graph over the same vectors, inner-product metric).

Both indexes return cosine scores (inner products of unit vectors) computed in float32 from the stored
vectors, so a score is the cosine of the embedder's own vectors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEXES = ("exact", "faiss")


@dataclass(frozen=True)
class Faq:
    ids: list[str]
    questions: list[str]
    answers: list[str]
    vectors: np.ndarray  # float32 [rows, dims]

    def __post_init__(self):
        n = len(self.ids)
        if not (len(self.questions) == len(self.answers) == n == self.vectors.shape[0]):
            raise ValueError(f"FAQ files disagree: {n} ids, {len(self.questions)} questions, {len(self.answers)} answers, "
                             f"{self.vectors.shape[0]} vectors")

    @classmethod
    def load(cls, folder: Path) -> "Faq":
        rows = [json.loads(line) for line in (folder / "faq.jsonl").read_text(encoding="utf-8").splitlines() if line]
        # Memory-mapped: NAME and NAME_stream share one copy in the page cache (150 MB at 100,000 entries).
        vectors = np.load(folder / "embeddings.npy", mmap_mode="r")
        if vectors.dtype != np.float32 or vectors.ndim != 2:
            raise ValueError(f"embeddings.npy must be float32 [rows, dims], got {vectors.dtype} {list(vectors.shape)}")
        return cls([r["id"] for r in rows], [r["question"] for r in rows], [r["answer"] for r in rows], vectors)


class ExactIndex:
    """Every stored vector against the query: one float32 matrix-vector product, then the k best."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def search(self, query: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        # einsum, not `@`: numpy's OpenBLAS sgemv took 2x longer on a [100000, 384] matrix here (29 vs 55 ms,
        # one or two threads); the product reads every stored vector, so large FAQs are memory-bound.
        scores = np.einsum("ij,j->i", self.vectors, query.astype(np.float32, copy=False))
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]  # best first; equal scores by row, as in the FAQ file
        return top.tolist(), scores[top].tolist()


class FaissIndex:
    """An HNSW graph (approximate: it visits a few hundred vectors, not all); its scores are exact inner
    products of the vectors it returns."""

    def __init__(self, path: Path, ef_search: int = 64):
        try:
            import faiss
        except ImportError:
            raise RuntimeError("this chatbot uses a FAISS index: install faiss-cpu (pip install 'tritonize[chat]')") from None
        self.index = faiss.read_index(str(path))
        self.ef_search = ef_search

    def search(self, query: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        import faiss

        k = min(k, self.index.ntotal)
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        scores, rows = self.index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        keep = rows[0] >= 0  # -1: fewer than k reachable
        return rows[0][keep].tolist(), scores[0][keep].tolist()


def load_index(folder: Path, kind: str, faq: Faq, ef_search: int = 64):
    """ef_search: HNSW candidates visited per search (recall vs time: 0.3 / 0.6 / 1.2 ms at 32 / 64 / 128
    on 100,000 vectors of 384 dims here)."""
    if kind == "exact":
        return ExactIndex(faq.vectors)
    if kind == "faiss":
        return FaissIndex(folder / "index.faiss", ef_search)
    raise ValueError(f"index must be one of {INDEXES}, not {kind!r}")
