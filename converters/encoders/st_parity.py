"""Parity of the served embedding with `SentenceTransformer.encode`, the reference users compare with:
the served head (`runtime.encoders.embedding_head`: pooling, Dense, Normalize) over the exported
engine's hidden states, on the texts the served tokenizer sees (the default prompt prepended), against
sentence-transformers' own pipeline on the raw texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tritonize.converters.base import ParityError
from tritonize.converters.encoders.st_modules import SentenceModules

MIN_COSINE = 0.99999  # per text, served vs SentenceTransformer.encode
MAX_NORM_ERROR = 1e-4  # per text, |served norm - reference norm| / reference norm

Hidden = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]  # texts -> hidden states, attention mask


@dataclass(frozen=True)
class EmbeddingParity:
    min_cosine: float
    max_norm_error: float
    texts: int


def compare_vectors(served: np.ndarray, reference: np.ndarray) -> EmbeddingParity:
    a, b = served.astype(np.float64), reference.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na < 1e-12) & (nb < 1e-12)  # e.g. every token of a text excluded: both pipelines give zeros
    cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-30))
    norm_err = np.where(both_zero, 0.0, np.abs(na - nb) / np.maximum(nb, 1e-12))
    return EmbeddingParity(float(cos.min()), float(norm_err.max()), len(a))


def served_embeddings(hidden: Hidden, modules: SentenceModules, texts: list[str]) -> np.ndarray:
    prompt = modules.prompts.default_prompt
    states, mask = hidden([prompt + t for t in texts])
    return modules.head()(states, mask)


def load_sentence_transformer(source: str, log: Callable[[str], None], name: str):
    """The checkpoint in sentence-transformers, or None (logged) where it cannot load it."""
    try:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(source, device="cpu")
    except Exception as e:  # not installed, or a checkpoint it cannot read: the hidden-state parity still holds
        log(f"{name}: sentence-transformers cannot load {source} ({type(e).__name__}: {e}); embeddings not compared with encode")
        return None


def sentence_transformers_parity(source: str, hidden: Hidden, modules: SentenceModules, batches: list[list[str]],
                                 log: Callable[[str], None], name: str) -> EmbeddingParity | None:
    """Served vs `SentenceTransformer.encode` on `batches`; None where sentence-transformers cannot load it."""
    model = load_sentence_transformer(source, log, name)
    if model is None:
        return None
    served = np.concatenate([served_embeddings(hidden, modules, b) for b in batches])
    reference = np.concatenate([model.encode(b, convert_to_numpy=True) for b in batches])
    if served.shape != reference.shape:
        raise ParityError(f"{name}: served embeddings {list(served.shape)} but SentenceTransformer.encode gives {list(reference.shape)}")
    return compare_vectors(served, reference)


def check(parity: EmbeddingParity, name: str) -> None:
    if not (parity.min_cosine >= MIN_COSINE and parity.max_norm_error <= MAX_NORM_ERROR):
        raise ParityError(f"{name}: served embeddings differ from SentenceTransformer.encode: min cosine {parity.min_cosine:.6f} "
                          f"(floor {MIN_COSINE}), max relative norm error {parity.max_norm_error:.1e} (tolerance {MAX_NORM_ERROR:.0e})")
