"""`rerank` on `Client` and `AsyncClient` (mixed in): a query and its documents to a served cross-encoder
(`tritonize convert bert --task rerank`), the documents back ranked by relevance.

One request carries the query (QUERY, [1, 1]) and every document (DOCUMENTS, [1, N]); the server scores
each (query, document) pair with the checkpoint's activation and returns SCORES and ORDER (indices by
descending score). What the client can see is wrong is refused before sending, naming the field; the
rest (an empty query, more documents than the pipeline's `max_documents`, text that is not UTF-8) the
server refuses with a message naming the field and the limit. Every failure is a TritonizeError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tritonize.client.errors import calling, invalid, utf8

RERANK_OUTPUTS = ("SCORES", "ORDER", "TOKEN_COUNT")


@dataclass(frozen=True)
class Ranked:
    index: int  # the document's position in the request
    score: float  # relevance, with the checkpoint's activation (sigmoid: 0..1)
    document: str | bytes  # as sent


@dataclass(frozen=True)
class RerankScores:
    """The pipeline's raw answer: scores in the documents' order, the order by descending score, the tokens of all pairs."""

    scores: np.ndarray
    order: np.ndarray
    tokens: int

    def ranked(self, documents: Sequence[str | bytes], top_n: int | None = None) -> list[Ranked]:
        return [Ranked(int(i), float(self.scores[i]), documents[i]) for i in self.order[: top_n or len(self.order)]]


def check_top_n(top_n) -> None:
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1):
        raise invalid("top_n", f"must be a positive integer or None (all documents), got {top_n!r}")


def check_rerank(query, documents) -> tuple[bytes, list[bytes]]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise invalid("documents", f"must be a list of strings, not {type(documents).__name__}")
    if not documents:
        raise invalid("documents", "is empty: send at least one document")
    return utf8(query, "query"), [utf8(d, f"documents[{i}]") for i, d in enumerate(documents)]


def rerank_request(mod, query: bytes, documents: list[bytes]):
    q = np.array([[query]], dtype=object)
    d = np.array([documents], dtype=object)
    inputs = [mod.InferInput("QUERY", list(q.shape), "BYTES"), mod.InferInput("DOCUMENTS", list(d.shape), "BYTES")]
    inputs[0].set_data_from_numpy(q)
    inputs[1].set_data_from_numpy(d)
    return inputs, [mod.InferRequestedOutput(o) for o in RERANK_OUTPUTS]


def scores_of(result) -> RerankScores:
    return RerankScores(result.as_numpy("SCORES")[0], result.as_numpy("ORDER")[0], int(result.as_numpy("TOKEN_COUNT").sum()))


class Reranking:
    """`Client`'s rerank methods (uses its transport)."""

    def rerank_scores(self, query, documents, *, model: str) -> RerankScores:
        inputs, outputs = rerank_request(self._sync_mod, *check_rerank(query, documents))  # type: ignore[attr-defined]
        with calling(model, self.url):  # type: ignore[attr-defined]
            result = self._client.infer(model, inputs, outputs=outputs, headers=self.headers, **self._infer_kwargs())  # type: ignore[attr-defined]
        return scores_of(result)

    def rerank(self, query, documents, *, model: str, top_n: int | None = None) -> list[Ranked]:
        """The documents by descending relevance to `query` (the first `top_n`, or all)."""
        check_top_n(top_n)
        return self.rerank_scores(query, documents, model=model).ranked(documents, top_n)


class AsyncReranking:
    """`AsyncClient`'s rerank methods, awaited."""

    async def rerank_scores(self, query, documents, *, model: str) -> RerankScores:
        inputs, outputs = rerank_request(self._sync_mod, *check_rerank(query, documents))  # type: ignore[attr-defined]
        with calling(model, self.url):  # type: ignore[attr-defined]
            result = await self._client.infer(model, inputs, outputs=outputs, headers=self.headers, **self._infer_kwargs())  # type: ignore[attr-defined]
        return scores_of(result)

    async def rerank(self, query, documents, *, model: str, top_n: int | None = None) -> list[Ranked]:
        check_top_n(top_n)
        return (await self.rerank_scores(query, documents, model=model)).ranked(documents, top_n)
