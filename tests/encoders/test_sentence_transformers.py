"""Sentence-transformers checkpoints served as the checkpoint says (pooling, Dense, Normalize, prompts),
and the architectures people deploy (XLM-RoBERTa, MPNet embedders; DeBERTa-v2, ELECTRA classifiers):
each tiny checkpoint through convert -> one real tritonserver -> Client, against the reference users
compare with (SentenceTransformer.encode, or the transformers classifier's logits)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.tiny_encoders import (
    SentenceVariant, build_bert, build_deberta_v2_classifier, build_electra_classifier, build_mpnet, build_sentence_model, build_xlm_roberta,
)

MIN_COSINE = 0.99999  # served vs SentenceTransformer.encode, per text
NORM_TOLERANCE = 1e-4  # relative, per text
LOGIT_TOLERANCE = 1e-4  # max abs, served vs transformers
PROMPTS = {"query": "query: ", "passage": "passage: "}

# Every pooling mode; Dense (one and two layers, four activations) and none; Normalize and none; both file formats.
VARIANTS = [
    SentenceVariant("st-cls-dense-norm", ("cls",), dense=((16, "tanh"),), similarity="cosine"),  # LaBSE's shape
    SentenceVariant("st-mean-dot", ("mean",), normalize=False, legacy=True, similarity="dot"),  # msmarco -dot: un-normalised
    SentenceVariant("st-max-2dense", ("max",), dense=((24, "identity"), (16, "relu")), normalize=False, legacy=True),
    SentenceVariant("st-sqrt-len", ("mean_sqrt_len_tokens",), normalize=False),
    SentenceVariant("st-weightedmean-dense", ("weightedmean",), dense=((20, "sigmoid"),), legacy=True),
    SentenceVariant("st-lasttoken", ("lasttoken",), prompts=PROMPTS),
    SentenceVariant("st-legacy-cls-norm", ("cls",), legacy=True),  # BGE's shape in the 2.x files
    SentenceVariant("st-cls-mean-prompt", ("cls", "mean"), prompts=PROMPTS, default_prompt_name="query", include_prompt=False),
    SentenceVariant("st-xlmr", ("mean",), prompts=PROMPTS, base="xlm-roberta"),  # multilingual E5's shape
    SentenceVariant("st-mpnet", ("mean",), legacy=True, base="mpnet"),  # all-mpnet-base-v2's shape
]
PYTHON_FLAVOUR = "st-cls-dense-norm-python"  # the three-step ensemble: Dense files in the postprocess step
CLASSIFIERS = {"deberta-v2-cls": build_deberta_v2_classifier, "electra-cls": build_electra_classifier}
BASES = {"bert": build_bert, "xlm-roberta": build_xlm_roberta, "mpnet": build_mpnet}
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello",
    "triton serves models with dynamic batching and ensembles",
    "",
    "numbers like 42 and 3.14 and punctuation ! ? , .",
    "sentences of different lengths are grouped into buckets " * 12,  # past every model's limit: truncated
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every tiny checkpoint converted into one repository, served by one tritonserver."""
    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.repository import Batching
    from tritonize.server import ServerConfig, TritonServer

    work, repo = tmp_path_factory.mktemp("st-checkpoints"), tmp_path_factory.mktemp("st-repository")
    batching = Batching(max_batch_size=16, intra_op_threads=1)
    bases = {name: build(work / name) for name, build in BASES.items()}
    checkpoints, reports = {}, {}
    for v in VARIANTS:
        checkpoints[v.name] = build_sentence_model(v, bases[v.base], work / v.name)
        reports[v.name] = convert_bert(str(checkpoints[v.name]), "embedding", repo, v.name, batching=batching, log=lambda m: None)
    reports[PYTHON_FLAVOUR] = convert_bert(str(checkpoints["st-cls-dense-norm"]), "embedding", repo, PYTHON_FLAVOUR, batching=batching,
                                           flavour="python", log=lambda m: None)
    checkpoints[PYTHON_FLAVOUR] = checkpoints["st-cls-dense-norm"]
    for name, build in CLASSIFIERS.items():
        checkpoints[name] = build(work / name)
        reports[name] = convert_bert(str(checkpoints[name]), "classification", repo, name, batching=batching, log=lambda m: None)
    config = ServerConfig(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=tmp_path_factory.mktemp("st-logs") / "tritonserver.log")
    with TritonServer(config) as server:
        yield SimpleNamespace(server=server, checkpoints=checkpoints, reports=reports, repository=repo)


@pytest.fixture(scope="module")
def clients(served):
    from tritonize.client import Client

    server = served.server
    with Client(server.grpc_url, "grpc") as g, Client(server.http_url, "http") as h:
        yield {"grpc": g, "http": h}


def encode(checkpoint) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(checkpoint), device="cpu").encode(TEXTS, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("name", [v.name for v in VARIANTS] + [PYTHON_FLAVOUR])
def test_served_embeddings_match_sentence_transformers_encode(served, clients, name, protocol):
    checkpoints, reports = served.checkpoints, served.reports
    reference = encode(checkpoints[name])
    # A degenerate random model (one vector for every text) would make the comparison vacuous.
    assert cosines(reference[:1].repeat(len(TEXTS), 0), reference)[1:].min() < 0.999
    vectors = clients[protocol].embed(TEXTS, model=name)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert cosines(vectors, reference).min() >= MIN_COSINE
    norms, ref_norms = np.linalg.norm(vectors, axis=1), np.linalg.norm(reference, axis=1)
    assert (np.abs(norms - ref_norms) / ref_norms).max() <= NORM_TOLERANCE
    report = reports[name]  # the converter measured the same against encode
    assert report.st_min_cosine >= MIN_COSINE and report.st_max_norm_error <= NORM_TOLERANCE


def test_the_checkpoints_files_decide_the_embedding(served, clients):
    """What differs between the checkpoints shows in what is served: widths from Dense, norms from Normalize."""
    reports = served.reports
    e = {v.name: clients["grpc"].embed(TEXTS, model=v.name) for v in VARIANTS}
    assert e["st-cls-dense-norm"].shape[1] == 16 and e["st-weightedmean-dense"].shape[1] == 20 and e["st-cls-mean-prompt"].shape[1] == 64
    assert np.abs(np.linalg.norm(e["st-mean-dot"], axis=1) - 1).max() > 0.1  # a dot-product model is served un-normalised
    np.testing.assert_allclose(np.linalg.norm(e["st-legacy-cls-norm"], axis=1), 1.0, atol=1e-5)
    # Same encoder weights (seed 0), another pooling: other vectors.
    assert cosines(e["st-legacy-cls-norm"], e["st-sqrt-len"]).min() < 0.99
    assert "cls + mean pooling (prompt excluded)" in reports["st-cls-mean-prompt"].embedding
    assert "Dense 32->24 identity -> Dense 24->16 relu -> no Normalize" in reports["st-max-2dense"].embedding


def test_the_default_prompt_is_prepended_and_left_out_of_the_pooling(served, clients):
    """st-cls-mean-prompt has default prompt 'query: ' and include_prompt false: the served vectors are
    encode's with that prompt, not the raw text's."""
    from sentence_transformers import SentenceTransformer

    checkpoints = served.checkpoints
    st = SentenceTransformer(str(checkpoints["st-cls-mean-prompt"]), device="cpu")
    served_vectors = clients["grpc"].embed(TEXTS[:3], model="st-cls-mean-prompt")
    with_prompt = st.encode(TEXTS[:3], prompt_name="query")
    without = st.encode(TEXTS[:3], prompt="")
    assert cosines(served_vectors, with_prompt).min() >= MIN_COSINE
    assert cosines(served_vectors, without).min() < 0.999


@pytest.mark.parametrize("name", ["st-cls-mean-prompt", "st-max-2dense", PYTHON_FLAVOUR])
def test_the_chatbots_faq_embedding_uses_the_checkpoints_head(served, clients, name):
    """The chatbot embeds its FAQ at conversion with the served pipeline's files: its vectors are the served ones."""
    from tritonize.converters.chat.embed import PipelineEmbedder

    vectors = PipelineEmbedder(served.repository, name, threads=1).embed(TEXTS)
    np.testing.assert_allclose(vectors, clients["grpc"].embed(TEXTS, model=name), atol=1e-5)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_served_classifier_logits_match_transformers(served, clients, name):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    checkpoints, reports = served.checkpoints, served.reports
    path = checkpoints[name]
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        reference = model(**tok(TEXTS, padding=True, truncation=True, return_tensors="pt")).logits.numpy()
    assert np.ptp(reference, axis=0).max() > 0.1  # logits vary with the input
    for protocol in ("grpc", "http"):
        served_logits = np.stack([p.logits for p in clients[protocol].classify(TEXTS, model=name)])
        assert np.abs(served_logits - reference).max() <= LOGIT_TOLERANCE
    assert reports[name].max_abs_error <= LOGIT_TOLERANCE


def test_a_hub_id_is_read_from_the_hub_cache_through_the_real_loaders(tmp_path):
    """`tritonize convert bert -m org/name` with the checkpoint in the Hugging Face cache and the network
    off: the sentence-transformers files are found through huggingface_hub, as online."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from tests.tiny_encoders import SentenceVariant, build_bert, build_sentence_model

    revision = "0123456789abcdef0123456789abcdef01234567"
    model_dir = tmp_path / "cache" / "models--tiny-org--st-cls-dense"
    checkpoint = build_sentence_model(SentenceVariant("st", ("cls",), dense=((16, "tanh"),)), build_bert(tmp_path / "base"), tmp_path / "st")
    shutil.copytree(checkpoint, model_dir / "snapshots" / revision)
    (model_dir / "refs").mkdir()
    (model_dir / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "tritonize", "convert", "bert", "-m", "tiny-org/st-cls-dense", "-r", str(tmp_path / "repo"),
                          "--name", "hub-st"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "repo" / "hub-st" / "tritonize.json").read_text())["report"]
    assert report["embedding"].startswith("sentence-transformers: cls pooling -> Dense 32->16 tanh -> Normalize")
    assert report["st_min_cosine"] >= MIN_COSINE and report["st_max_norm_error"] <= NORM_TOLERANCE
    assert "min cosine" in out.stdout  # the figure is in the conversion's log


def test_the_pytorch_engine_conversion_serves_the_same_head(tmp_path):
    """`--device cpu`: the stored weights' hidden states + the head, checked against encode; the Dense
    files go to the postprocess step."""
    from tritonize.converters.encoders.weights import convert_bert_torch
    from tests.tiny_encoders import build_bert

    variant = next(v for v in VARIANTS if v.name == "st-max-2dense")
    checkpoint = build_sentence_model(variant, build_bert(tmp_path / "base"), tmp_path / "st")
    report = convert_bert_torch(str(checkpoint), "embedding", tmp_path / "repo", "torch-st", log=lambda m: None)
    assert report.st_min_cosine >= MIN_COSINE and report.st_max_norm_error <= NORM_TOLERANCE
    assert "max pooling -> Dense 32->24 identity -> Dense 24->16 relu" in report.embedding
    assert sorted(p.name for p in (tmp_path / "repo" / "torch-st_postprocess" / "1").glob("dense_*.npz")) == ["dense_0.npz", "dense_1.npz"]


def test_fusions_that_change_the_outputs_are_reported_and_the_plain_export_served(tmp_path, monkeypatch):
    """A fused graph that is not exact for an architecture (here: the optimiser's output with one weight
    changed) is not fatal: the conversion says so and serves the plain export, which passes."""
    import onnx
    from onnx import numpy_helper

    from tritonize.converters.encoders import bert
    from tests.tiny_encoders import build_electra_classifier

    def inexact_fusions(src, dst, config):
        graph = onnx.load(str(src))
        w = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))
        onnx.save(graph, str(dst))
        return True

    monkeypatch.setattr(bert, "optimize_graph", inexact_fusions)
    logs: list[str] = []
    report = bert.convert_bert(str(build_electra_classifier(tmp_path / "electra")), "classification", tmp_path / "repo", "e", log=logs.append)
    assert any("ORT transformer fusions change the outputs" in line and "serving the plain export" in line for line in logs)
    assert not report.optimized and report.max_abs_error <= LOGIT_TOLERANCE


# -- per-request options: prompt_name, dimensions, normalize, truncate --------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("name", ["st-lasttoken", "st-cls-mean-prompt"])  # the prompt pooled, and left out of the pooling
def test_a_named_prompt_is_encodes_prompt(served, clients, name, protocol):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(served.checkpoints[name]), device="cpu")
    vectors = clients[protocol].embed(TEXTS, model=name, prompt_name="passage")
    assert cosines(vectors, st.encode(TEXTS, prompt_name="passage")).min() >= MIN_COSINE
    assert cosines(vectors, st.encode(TEXTS, prompt_name="query"))[:3].max() < 0.9999  # another prompt, other vectors


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_dimensions_cut_and_renormalise_as_encode_with_truncate_dim(served, clients, protocol):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(served.checkpoints["st-cls-dense-norm"]), device="cpu")
    vectors = clients[protocol].embed(TEXTS, model="st-cls-dense-norm", dimensions=8)
    reference = st.encode(TEXTS, truncate_dim=8, normalize_embeddings=True)
    assert vectors.shape == (len(TEXTS), 8) and cosines(vectors, reference).min() >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_normalize_false_returns_the_raw_vector_of_a_normalising_checkpoint(served, clients):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(served.checkpoints["st-cls-dense-norm"]), device="cpu")
    raw = SentenceTransformer(modules=list(st)[:-1], device="cpu").encode(TEXTS)  # without its Normalize module
    vectors = clients["grpc"].embed(TEXTS, model="st-cls-dense-norm", normalize=False)
    assert cosines(vectors, raw).min() >= MIN_COSINE
    assert (np.abs(np.linalg.norm(vectors, axis=1) - np.linalg.norm(raw, axis=1)) / np.linalg.norm(raw, axis=1)).max() <= NORM_TOLERANCE
    assert np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > 0.1
    dot = clients["grpc"].embed(TEXTS, model="st-mean-dot", normalize=True)  # and the other way round
    np.testing.assert_allclose(np.linalg.norm(dot, axis=1), 1.0, atol=1e-5)


def test_bad_options_name_the_field_and_the_limit_and_the_server_keeps_serving(served, clients):
    from tritonize.client import TritonizeError

    c = clients["grpc"]
    # sentence-transformers saves empty 'query' and 'document' prompts beside the checkpoint's own.
    with pytest.raises(TritonizeError, match=r"prompt_name 'search' is not one of this model's prompts: 'document', 'passage', 'query'"):
        c.embed(TEXTS, model="st-lasttoken", prompt_name="search")
    with pytest.raises(TritonizeError, match=r"dimensions must be between 1 and 16 \(this model's embedding size\), got 17"):
        clients["http"].embed(TEXTS, model="st-cls-dense-norm", dimensions=17)
    with pytest.raises(TritonizeError, match=r"dimensions must be a positive int, not 0"):
        c.embed(TEXTS, model="st-cls-dense-norm", dimensions=0)
    with pytest.raises(TritonizeError, match=r"TEXT\[5\] is longer than the model's limit of 64 tokens and truncate is false"):
        c.embed(TEXTS, model="st-cls-dense-norm", truncate=False)
    assert c.embed(TEXTS[:5], model="st-cls-dense-norm", truncate=False).shape == (5, 16)  # within the limit: served
    with pytest.raises(TritonizeError, match=r"request parameters dimensions are served by the fused flavour"):
        c.embed(TEXTS, model=PYTHON_FLAVOUR, dimensions=8)
    assert served.server.is_ready() and c.embed(["still here"], model="st-cls-dense-norm").shape == (1, 16)


def test_the_async_client_sends_the_same_options(served, clients):
    import asyncio

    from tritonize.client import AsyncClient

    async def run():
        async with AsyncClient(served.server.grpc_url) as c:
            return await c.embed(TEXTS, model="st-lasttoken", prompt_name="query", dimensions=10, normalize=True)

    np.testing.assert_allclose(asyncio.run(run()), clients["grpc"].embed(TEXTS, model="st-lasttoken", prompt_name="query", dimensions=10,
                                                                          normalize=True), atol=1e-6)


def test_the_openai_gateway_shortens_with_dimensions(served, clients):
    """/v1/embeddings through the official openai SDK: `dimensions` is the Matryoshka cut, re-normalised; the
    extensions prompt_name, normalize and truncate are Client.embed's options."""
    import httpx
    import openai

    from tests.gateway.conftest import error_of, running
    from tritonize.gateway.app import GatewaySettings
    from tritonize.server.launcher import free_port

    with running(GatewaySettings(served.server.grpc_url, port=free_port())) as url:
        oai = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        got = oai.embeddings.create(model="st-cls-dense-norm", input=TEXTS, dimensions=8)
        vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
        np.testing.assert_allclose(vectors, clients["grpc"].embed(TEXTS, model="st-cls-dense-norm", dimensions=8), atol=1e-6)
        assert vectors.shape == (len(TEXTS), 8)
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "st-cls-dense-norm", "input": "hi", "dimensions": 17})
        assert "dimensions must be between 1 and 16" in error_of(r, 400, "dimensions")["message"]
        r = httpx.post(f"{url}/v1/embeddings", json={"model": PYTHON_FLAVOUR, "input": "hi", "dimensions": 8})
        assert "a three-step ensemble serves whole vectors" in error_of(r, 400, "dimensions")["message"]
        # Extensions (text-embeddings-inference's names): prompt_name, normalize, truncate, as Client.embed's options.
        got = oai.embeddings.create(model="st-lasttoken", input=TEXTS, extra_body={"prompt_name": "passage", "normalize": False})
        np.testing.assert_allclose(np.array([d.embedding for d in got.data], dtype=np.float32),
                                   clients["grpc"].embed(TEXTS, model="st-lasttoken", prompt_name="passage", normalize=False), atol=1e-6)
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "st-lasttoken", "input": "hi", "prompt_name": "search"})
        assert "prompt_name 'search' is not one of this model's prompts" in error_of(r, 400, "prompt_name")["message"]
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "st-lasttoken", "input": "word " * 400, "truncate": False})
        assert "truncate is false" in error_of(r, 400, "input")["message"]
        r = httpx.post(f"{url}/v1/embeddings", json={"model": PYTHON_FLAVOUR, "input": "hi", "normalize": False})
        assert "a three-step ensemble applies no per-request options" in error_of(r, 400, "normalize")["message"]


def test_int8_accuracy_is_measured_on_the_checkpoints_own_embedding(tmp_path):
    """--quantize's cosine vs fp32 is taken on the served head (here CLS -> Dense -> Normalize with a
    default prompt), not on mean pooling: computed by hand from the same two graphs, it agrees."""
    import onnx
    from onnx import numpy_helper

    from tests.tiny_encoders import build_bert
    from tritonize.converters.encoders.bert import convert_bert, ort_session
    from tritonize.converters.encoders.calibration import TextSets
    from tritonize.converters.encoders.quantize import accuracy, held_out_outputs
    from tritonize.converters.encoders.st_modules import read_sentence_modules
    from tritonize.converters.repository import model_files
    from transformers import AutoTokenizer

    variant = SentenceVariant("st", ("cls",), dense=((16, "tanh"),), prompts=PROMPTS, default_prompt_name="query")
    checkpoint = build_sentence_model(variant, build_bert(tmp_path / "base"), tmp_path / "st")
    convert_bert(str(checkpoint), "embedding", tmp_path / "repo", "st", log=lambda m: None)
    graph = model_files(tmp_path / "repo", "st") / "model.onnx"
    other = onnx.load(str(graph))  # a stand-in for the int8 graph: every weight 5% off
    for t in other.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.05, t.name))
    onnx.save(other, str(tmp_path / "other.onnx"))
    a, b = ort_session(graph), ort_session(tmp_path / "other.onnx")
    tokenizer, modules = AutoTokenizer.from_pretrained(checkpoint), read_sentence_modules(checkpoint)
    texts = TextSets(calibration=[], held_out=TEXTS[:5], calibration_source="default")
    got = accuracy(a, b, tokenizer, "embedding", 64, texts, modules.head(), "query: ")
    prompted = ["query: " + t for t in TEXTS[:5]]
    (ha, mask), (hb, _) = held_out_outputs(a, tokenizer, prompted, 64), held_out_outputs(b, tokenizer, prompted, 64)
    expected = (modules.head()(ha, mask) * modules.head()(hb, mask)).sum(-1).min()
    assert got["min_cosine_vs_fp32"] == pytest.approx(float(expected), abs=1e-6)
    assert got["min_cosine_vs_fp32"] != pytest.approx(accuracy(a, b, tokenizer, "embedding", 64, texts)["min_cosine_vs_fp32"], abs=1e-6)
