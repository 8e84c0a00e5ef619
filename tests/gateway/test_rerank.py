"""POST /v1/rerank in the Cohere/Jina shape (what text-embeddings-inference, Infinity and vLLM accept), on the tiny
cross-encoder: the scores are the client's (checked against CrossEncoder.predict in tests/encoders/test_rerank.py),
top_n, return_documents, usage; bad input is a 400 naming the parameter; GET /v1/models lists the reranker."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.gateway.conftest import error_of
from tests.tiny_rerankers import RERANKER, RERANKER_IDENTITY

QUERY = "how does triton batch requests"
DOCUMENTS = ["triton serves models with dynamic batching", "hello", "a tiny model is built from a config " * 10, ""]


def rerank(base: str, **body) -> httpx.Response:
    content = json.dumps({"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, **body})  # ASCII: lone surrogates as \\udxxx
    return httpx.post(f"{base}/v1/rerank", content=content, headers={"Content-Type": "application/json"}, timeout=60)


@pytest.mark.parametrize("model", [RERANKER, RERANKER_IDENTITY])
def test_the_response_has_the_cohere_jina_shape_and_the_clients_scores(base, grpc_client, model):
    r = rerank(base, model=model)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "object", "model", "results", "usage"} and body["id"].startswith("rerank-") and body["model"] == model
    raw = grpc_client.rerank_scores(QUERY, DOCUMENTS, model=model)
    assert [x["index"] for x in body["results"]] == list(raw.order)
    np.testing.assert_allclose([x["relevance_score"] for x in body["results"]], raw.scores[raw.order], rtol=0, atol=1e-7)
    assert [x["document"] for x in body["results"]] == [{"text": DOCUMENTS[i]} for i in raw.order]
    assert body["usage"] == {"total_tokens": raw.tokens}


def test_top_n_and_return_documents(base):
    full = rerank(base).json()["results"]
    top = rerank(base, top_n=2, return_documents=False).json()["results"]
    assert top == [{"index": x["index"], "relevance_score": x["relevance_score"]} for x in full[:2]]  # no document key at all
    assert rerank(base, top_n=0).json()["results"] == full  # 0, as vLLM sends it: every document


def test_models_lists_the_rerankers(base):
    cards = {m["id"]: m for m in httpx.get(f"{base}/v1/models").json()["data"]}
    assert cards[RERANKER]["kind"] == cards[RERANKER_IDENTITY]["kind"] == "rerank"


BAD = [  # (body changes, the param named, what the message says)
    ({"query": ""}, "query", "query is empty"),
    ({"documents": []}, "documents", "the list is empty"),
    ({"documents": ["d"] * 10_000}, "documents", "documents has 10,000 strings; the limit is 100 per request"),
    ({"query": "bad \ud800 query"}, "query", "query is not valid UTF-8 text (surrogates not allowed at offset 4)"),
    ({"documents": ["ok", "\udfff"]}, "documents", "documents[1] is not valid UTF-8 text"),
    ({"documents": ["ok", 3]}, "documents", "documents[1] is a int"),
    ({"documents": "one string"}, "documents", "valid list"),
    ({"top_n": -1}, "top_n", "greater than or equal to 0"),
    ({"rank_fields": ["title"]}, "rank_fields", "unknown parameter"),
]


@pytest.mark.parametrize("change, param, message", BAD, ids=[p + ":" + m[:20] for _, p, m in BAD])
def test_bad_input_is_a_400_naming_the_parameter(base, still_serving, change, param, message):
    error = error_of(rerank(base, **change), 400, param)
    assert message in error["message"], error
    assert rerank(base).status_code == 200  # and the next request is served


def test_a_non_rerank_model_is_refused_naming_model(base):
    from tests.conftest import EMBEDDER

    error = error_of(rerank(base, model=EMBEDDER), 400, "model", "wrong_model_kind")
    assert error["message"] == f"'{EMBEDDER}' is a embedding model; /v1/rerank serves rerank models"
    error_of(rerank(base, model="no-such-model"), 404, "model", "model_not_found")
