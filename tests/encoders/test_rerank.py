"""Rerankers: tiny cross-encoders (tests/tiny_rerankers.py) converted with `--task rerank`, served by the real
tritonserver and called through the typed clients: scores against sentence-transformers' CrossEncoder.predict,
the order, top_n, batching from Triton's statistics, bad input, the CLI; and, without a server, what the
converter reads from a checkpoint and refuses."""

from __future__ import annotations

import asyncio
import json
import random
import re

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client import AsyncClient, TritonizeError
from tests.tiny_rerankers import MAX_LENGTH, RERANKER, RERANKER_IDENTITY

SCORE_TOLERANCE = 1e-4  # max abs difference, served (ONNX Runtime fp32) vs CrossEncoder.predict (PyTorch)
QUERY = "how does triton batch requests of different lengths"
DOCUMENTS = [
    "triton serves models with dynamic batching and ensembles",
    "hello",
    "",
    "sentences of different lengths are grouped into buckets " * 10,  # far longer than the model's 48 tokens
    "the quick brown fox jumps over the lazy dog",
    "numbers like 42 and 3.14 and punctuation ! ? , .",
    "latency throughput queue replicas padding tokens batch",
]
LONG_QUERY = "a tiny model is built from a config with random weights " * 8  # longer than the model too
MODELS = pytest.mark.parametrize("model, checkpoint", [(RERANKER, "tiny_cross_encoder"), (RERANKER_IDENTITY, "tiny_cross_encoder_identity")])


def cross_encoder(built, checkpoint: str):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(built[checkpoint]), device="cpu")


def served_scores(ranked, n: int) -> np.ndarray:
    scores = np.full(n, np.nan)
    for r in ranked:
        scores[r.index] = r.score
    return scores


@pytest.fixture(scope="module")
def references(built) -> dict:
    """CrossEncoder.predict's scores for (query, each document), per model and query."""
    out = {}
    for model, checkpoint in ((RERANKER, "tiny_cross_encoder"), (RERANKER_IDENTITY, "tiny_cross_encoder_identity")):
        ce = cross_encoder(built, checkpoint)
        for q in (QUERY, LONG_QUERY):
            out[model, q] = np.asarray(ce.predict([(q, d) for d in DOCUMENTS], show_progress_bar=False))
    return out


def test_the_references_are_not_degenerate(built, references):
    """Scores that vary across documents; pairs whose second segment is typed 1 (so the engine must get token
    types right); documents past the model's length; and the identity checkpoint's activation read by
    sentence-transformers itself."""
    import torch
    from transformers import AutoTokenizer

    for scores in references.values():
        assert np.ptp(scores) > 0.1
    tok = AutoTokenizer.from_pretrained(built["tiny_cross_encoder"])
    enc = tok(QUERY, DOCUMENTS[0])
    assert set(enc["token_type_ids"]) == {0, 1}
    assert len(tok(QUERY, DOCUMENTS[3])["input_ids"]) > MAX_LENGTH and len(tok(LONG_QUERY, "hello")["input_ids"]) > MAX_LENGTH
    assert isinstance(cross_encoder(built, "tiny_cross_encoder_identity").activation_fn, torch.nn.Identity)
    assert isinstance(cross_encoder(built, "tiny_cross_encoder").activation_fn, torch.nn.Sigmoid)
    identity = references[RERANKER_IDENTITY, QUERY]
    assert identity.min() < 0 or identity.max() > 1  # raw logits, not probabilities


def test_the_converter_checked_the_served_scores_against_cross_encoder(built):
    reports = built["rerank_reports"]
    assert {n: (r.activation, r.reference) for n, r in reports.items()} == {
        RERANKER: ("sigmoid", "CrossEncoder.predict"), RERANKER_IDENTITY: ("identity", "CrossEncoder.predict")}
    assert reports[RERANKER_IDENTITY].activation_source == "config_sentence_transformers.json activation_fn"
    for r in reports.values():
        assert 0 < r.score_max_abs_error <= SCORE_TOLERANCE and r.task == "rerank" and r.max_documents == 100


@MODELS
@pytest.mark.parametrize("client_name", ["grpc_client", "http_client"])
@pytest.mark.parametrize("query", [QUERY, LONG_QUERY], ids=["query", "long-query"])
def test_served_scores_match_cross_encoder_predict(request, client_name, model, checkpoint, query, references):
    ranked = request.getfixturevalue(client_name).rerank(query, DOCUMENTS, model=model)
    reference = references[model, query]
    served = served_scores(ranked, len(DOCUMENTS))
    assert np.abs(served - reference).max() <= SCORE_TOLERANCE
    assert [r.score for r in ranked] == sorted(served, reverse=True)  # by descending score
    assert [r.document for r in ranked] == [DOCUMENTS[r.index] for r in ranked]
    if np.sort(np.diff(np.sort(reference))).min() > 2 * SCORE_TOLERANCE:  # no near ties: the same order as the reference
        assert [r.index for r in ranked] == list(np.argsort(-reference))


def test_top_n_and_the_raw_scores(grpc_client, references):
    full = grpc_client.rerank(QUERY, DOCUMENTS, model=RERANKER)
    assert grpc_client.rerank(QUERY, DOCUMENTS, model=RERANKER, top_n=3) == full[:3]
    assert grpc_client.rerank(QUERY, DOCUMENTS, model=RERANKER, top_n=100) == full  # more than there are: all
    raw = grpc_client.rerank_scores(QUERY, DOCUMENTS, model=RERANKER)
    np.testing.assert_allclose(raw.scores, references[RERANKER, QUERY], atol=SCORE_TOLERANCE)
    assert list(raw.order) == [r.index for r in full]
    assert 0 < raw.tokens <= len(DOCUMENTS) * MAX_LENGTH


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores(server, grpc_client, raw_grpc):
    """Requests with 1 to 8 documents of mixed lengths, 48 in flight: fewer executions than requests on the
    rerank step (Triton's own statistics), and each answer equal to the same request sent alone."""
    rng = random.Random(5)
    words = "latency throughput queue replica padding token batch server model request answer length".split()
    requests = [(" ".join(rng.choices(words, k=rng.choice([1, 3, 6]))),
                 [" ".join(rng.choices(words, k=rng.choice([2, 8, 30, 60]))) for _ in range(rng.randint(1, 8))]) for _ in range(48)]
    alone = [grpc_client.rerank_scores(q, docs, model=RERANKER).scores for q, docs in requests]

    def stats() -> tuple[int, int]:
        s = raw_grpc.get_inference_statistics(model_name=RERANKER, as_json=True)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    async def send_all():
        async with AsyncClient(server.grpc_url) as c:
            return await asyncio.gather(*(c.rerank_scores(q, docs, model=RERANKER) for q, docs in requests))

    inf0, exe0 = stats()
    results = asyncio.run(send_all())
    inf1, exe1 = stats()
    assert inf1 - inf0 == len(requests)
    assert exe1 - exe0 < (inf1 - inf0) / 2, f"{exe1 - exe0} executions for {inf1 - inf0} requests: not batched"
    for got, expected in zip(results, alone):
        np.testing.assert_allclose(got.scores, expected, atol=1e-5)


# -- bad input: a clear error naming the field (and the limit); the server stays ready ------------------
def raw_rerank(raw_grpc, query: np.ndarray, documents: np.ndarray):
    inputs = [grpcclient.InferInput("QUERY", list(query.shape), "BYTES"), grpcclient.InferInput("DOCUMENTS", list(documents.shape), "BYTES")]
    inputs[0].set_data_from_numpy(query)
    inputs[1].set_data_from_numpy(documents)
    return raw_grpc.infer(RERANKER, inputs)


@pytest.fixture()
def reranker_still_serving(still_serving, grpc_client, references):
    yield
    served = served_scores(grpc_client.rerank(QUERY, DOCUMENTS, model=RERANKER), len(DOCUMENTS))
    assert np.abs(served - references[RERANKER, QUERY]).max() <= SCORE_TOLERANCE


BAD = [  # (query, documents, what the error says)
    ("", ["a document"], r"^QUERY is empty: send the text to rank the documents against$"),
    ("   ", ["a document"], r"^QUERY is empty"),
    (QUERY, ["d"] * 10_000, r"^DOCUMENTS has 10,000 strings; the limit is 100 per request$"),
    (QUERY, ["d"] * 101, r"^DOCUMENTS has 101 strings; the limit is 100 per request$"),
    (b"bad \xff query", ["a document"], r"^QUERY\[0\] is not valid UTF-8 \(byte 0xff at offset 4\)$"),
    (QUERY, [b"good", b"bad\xfe"], r"^DOCUMENTS\[1\] is not valid UTF-8 \(byte 0xfe at offset 3\)$"),
    (QUERY, ["fine", "x" * 1_500_000], r"^DOCUMENTS\[1\] is 1,500,000 bytes; the limit is 1,000,000 bytes per row$"),
]


@pytest.mark.usefixtures("reranker_still_serving")
@pytest.mark.parametrize("query, documents, message", BAD, ids=["empty-query", "blank-query", "10000-documents", "101-documents",
                                                               "query-not-utf8", "document-not-utf8", "document-too-big"])
@pytest.mark.parametrize("client_name", ["grpc_client", "http_client"])
def test_bad_input_names_the_field_and_the_limit(request, client_name, query, documents, message):
    with pytest.raises(TritonizeError) as e:
        request.getfixturevalue(client_name).rerank(query, documents, model=RERANKER)
    assert e.value.status == "INVALID_ARG" and e.value.model == RERANKER
    assert re.search(message, e.value.message), e.value.message


@pytest.mark.usefixtures("reranker_still_serving")
def test_no_documents_is_refused_by_the_client_and_by_the_server(grpc_client, raw_grpc):
    with pytest.raises(TritonizeError, match=r"^documents is empty: send at least one document$") as e:
        grpc_client.rerank(QUERY, [], model=RERANKER)
    assert e.value.status == "INVALID_ARG"
    with pytest.raises(InferenceServerException, match="DOCUMENTS has no strings: send at least one document"):
        raw_rerank(raw_grpc, np.array([[QUERY.encode()]], dtype=object), np.zeros((1, 0), dtype=object))
    with pytest.raises(InferenceServerException, match=r"QUERY must be one string per request, got shape \[2, 1\]"):
        raw_rerank(raw_grpc, np.array([[b"a"], [b"b"]], dtype=object), np.array([[b"d"], [b"e"]], dtype=object))


@pytest.mark.parametrize("kwargs, message", [
    ({"documents": "one string"}, r"^documents must be a list of strings, not str$"),
    ({"documents": ["ok", 3]}, r"^documents\[1\] must be str or bytes, not int$"),
    ({"top_n": 0}, r"^top_n must be a positive integer or None \(all documents\), got 0$"),
    ({"top_n": True}, r"^top_n must be a positive integer"),
    ({"query": None}, r"^query must be str or bytes, not NoneType$"),
])
def test_the_client_refuses_what_it_can_see_is_wrong_before_sending(grpc_client, kwargs, message):
    call = {"query": QUERY, "documents": DOCUMENTS, "top_n": None} | kwargs
    with pytest.raises(TritonizeError, match=message) as e:
        grpc_client.rerank(call["query"], call["documents"], model=RERANKER, top_n=call["top_n"])
    assert e.value.status == "INVALID_ARG"


@pytest.mark.usefixtures("reranker_still_serving")
def test_a_bad_request_does_not_fail_its_neighbours(server, references):
    async def run():
        async with AsyncClient(server.grpc_url) as c:
            calls = [c.rerank(b"bad \xff" if i % 4 == 0 else QUERY, DOCUMENTS, model=RERANKER) for i in range(24)]
            return await asyncio.gather(*calls, return_exceptions=True)

    for i, r in enumerate(asyncio.run(run())):
        if i % 4 == 0:
            assert isinstance(r, TritonizeError) and "QUERY[0] is not valid UTF-8" in r.message
        else:
            assert isinstance(r, list) and np.abs(served_scores(r, len(DOCUMENTS)) - references[RERANKER, QUERY]).max() <= SCORE_TOLERANCE


def test_infer_rerank_cli(server, references):
    from typer.testing import CliRunner

    from tritonize.cli import app

    result = CliRunner().invoke(app, ["infer", "rerank", RERANKER, QUERY, *DOCUMENTS[:2], DOCUMENTS[4], "--top-n", "2", "--url", server.grpc_url])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    reference = references[RERANKER, QUERY][[0, 1, 4]]
    best = np.argsort(-reference)[:2]
    assert len(lines) == 2
    for line, k in zip(lines, best):
        assert line.split()[0] == f"{reference[k]:.4f}" and f"[{k}]" in line
    failed = CliRunner().invoke(app, ["infer", "rerank", RERANKER, "", "a document", "--url", server.grpc_url])
    assert failed.exit_code == 1 and "QUERY is empty" in failed.output


# -- the converter, without a server ----------------------------------------------------------------
def write_checkpoint(folder, config: dict, st: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"], **config}))
    if st is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(st))
    return str(folder)


ACTIVATION_CASES = [  # (config.json additions, config_sentence_transformers.json, expected)
    ({"id2label": {"0": "LABEL_0"}}, None, ("sigmoid", "default (one label)")),
    ({"id2label": {"0": "LABEL_0"}, "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}, None,
     ("identity", "config.json sentence_transformers.activation_fn")),
    ({"id2label": {"0": "LABEL_0"}, "sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"}, None,
     ("tanh", "config.json sbert_ce_default_activation_function")),
    ({"id2label": {"0": "LABEL_0"}, "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}},
     {"activation_fn": "torch.nn.modules.activation.Sigmoid"}, ("sigmoid", "config_sentence_transformers.json activation_fn")),
]


@pytest.mark.unit
@pytest.mark.parametrize("config, st, expected", ACTIVATION_CASES, ids=["default", "v4-config", "pre-v4", "v5-first"])
def test_the_activation_is_what_cross_encoder_applies(tmp_path, config, st, expected):
    from tritonize.converters.encoders.rerank import checkpoint_activation

    assert checkpoint_activation(write_checkpoint(tmp_path / "ce", config, st)) == expected


@pytest.mark.unit
@pytest.mark.parametrize("config, st, message", [
    ({"id2label": {"0": "a", "1": "b", "2": "c"}}, None, r"one relevance logit \(num_labels 1\); .* has 3 labels.*--task classification"),
    ({"id2label": {"0": "LABEL_0"}}, {"activation_fn": "mypackage.Custom"},
     r"config_sentence_transformers.json activation_fn is 'mypackage.Custom'; rerank serves torch.nn.modules.activation.Sigmoid"),
    ({"architectures": ["Qwen3ForCausalLM"]}, None, r"causal LM \(Qwen3ForCausalLM\)"),
])
def test_what_cannot_be_served_exactly_is_refused_with_the_reason(tmp_path, config, st, message):
    from tritonize.converters.encoders.rerank import checkpoint_activation

    with pytest.raises(ValueError, match=message):
        checkpoint_activation(write_checkpoint(tmp_path / "ce", config, st))


@pytest.mark.unit
@pytest.mark.parametrize("extra", [["--quantize"], ["--device", "cpu"], ["--flavour", "native", "--engine", "tensorrt"]])
def test_what_rerank_does_not_serve_is_refused_before_any_work(tmp_path, extra):
    from typer.testing import CliRunner

    from tritonize.cli import app
    from tritonize.converters.encoders.rerank import convert_rerank

    with pytest.raises(ValueError, match="flavour fused"):
        convert_rerank(str(tmp_path), tmp_path / "repo", "x", flavour="python")
    result = CliRunner().invoke(app, ["convert", "bert", "--model", str(tmp_path), "--task", "rerank", "-r", str(tmp_path / "repo"), *extra])
    assert result.exit_code != 0 and "--task rerank serves the fp32 ONNX Runtime graph" in result.output, result.output
    assert not (tmp_path / "repo").exists()


@pytest.mark.unit
def test_the_contract_and_the_order():
    from tritonize.contract.encoders import Reranking
    from tritonize.runtime.encoders.rerank import ACTIVATIONS, order_of

    assert Reranking.from_params(Reranking("identity", 7).to_params()) == Reranking("identity", 7)
    with pytest.raises(ValueError, match="max_documents must be >= 1, got 0"):
        Reranking(max_documents=0)
    with pytest.raises(ValueError, match="activation must be one of sigmoid, identity, tanh, got 'softmax'"):
        Reranking("softmax")
    assert list(order_of(np.array([0.2, 0.9, 0.2, 0.5], dtype=np.float32))) == [1, 3, 0, 2]  # ties keep the documents' order
    x = np.array([-100.0, -1.0, 0.0, 2.0, 100.0], dtype=np.float32)
    np.testing.assert_allclose(ACTIVATIONS["sigmoid"](x), 1 / (1 + np.exp(-x.astype(np.float64))), atol=1e-7)


def test_convert_bert_task_rerank_from_the_cli_writes_the_limit_and_the_report(built, tmp_path):
    from typer.testing import CliRunner

    from tritonize.cli import app
    from tritonize.contract.files import read_manifest
    from tritonize.contract.model_config import read_config

    args = ["convert", "bert", "--model", str(built["tiny_cross_encoder_identity"]), "--task", "rerank", "--max-documents", "5",
            "-r", str(tmp_path), "--name", "cli-reranker"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    params = {k: v.string_value for k, v in read_config(tmp_path / "cli-reranker" / "config.pbtxt").parameters.items()}
    assert (params["task"], params["max_documents"], params["activation"], params["max_length"]) == ("rerank", "5", "identity", str(MAX_LENGTH))
    report = read_manifest(tmp_path, "cli-reranker")["report"]
    assert report["reference"] == "CrossEncoder.predict" and 0 < report["score_max_abs_error"] <= SCORE_TOLERANCE
    again = CliRunner().invoke(app, args)  # the same source and options: reused
    assert again.exit_code == 0 and "reusing" in again.output
