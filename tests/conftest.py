"""One real tritonserver for the whole test run, serving every pipeline the tests need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tritonize.server import ServerConfig, TritonServer  # noqa: E402

EMBEDDER = "minilm"  # the three-step ensemble (flavour python): tests that watch its steps use it
CLASSIFIER = "tiny-bert-cls"
EMBEDDER_FUSED = "minilm-fused"  # the default flavour on CPU: one Python-backend model
CLASSIFIER_FUSED = "tiny-bert-cls-fused"
# Dynamic int8, calibrated on a few texts (tests/encoders/test_int8.py). The floor is not enforced: the random tiny
# classifier's logits are near ties, so a label flips with noise that means nothing for a trained model.
CLASSIFIER_INT8 = "tiny-bert-cls-int8"


def build_encoders(repo: Path, work: Path) -> dict:
    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.encoders.quantize import Int8Options
    from tritonize.converters.repository import Batching
    from tests.tiny_models import build_tiny_bert_classifier

    checkpoint = build_tiny_bert_classifier(work / "tiny-bert-cls")
    batching = Batching(max_batch_size=16, intra_op_threads=1)
    for flavour, embedder, classifier in (("python", EMBEDDER, CLASSIFIER), ("fused", EMBEDDER_FUSED, CLASSIFIER_FUSED)):
        convert_bert("sentence-transformers/all-MiniLM-L6-v2", "embedding", repo, embedder, batching=batching, flavour=flavour, log=lambda m: None)
        convert_bert(str(checkpoint), "classification", repo, classifier, batching=batching, flavour=flavour, log=lambda m: None)
    int8 = convert_bert(str(checkpoint), "classification", repo, CLASSIFIER_INT8, quantize=True, batching=batching,
                        int8=Int8Options(calibration_limit=32, enforce_floor=False), log=lambda m: None)  # fused, the default
    return {"tiny_bert_classifier": checkpoint, "int8_report": int8}


from tests.tiny_generators import build_generators  # noqa: E402

VOICE = "tiny-vits"


def build_voices(repo: Path, work: Path) -> dict:
    from tritonize.converters.repository import Batching
    from tritonize.converters.speech.vits import convert_tts
    from tritonize.converters.speech.tiny import build_tiny_vits

    checkpoint = build_tiny_vits(work / "tiny-vits")
    convert_tts(str(checkpoint), repo, VOICE, Batching(max_batch_size=8, intra_op_threads=1), log=lambda m: None)
    return {"tiny_vits": checkpoint}

CHATBOT = "faq-bot"  # the demo FAQ over MiniLM and the tiny GPT-2; exact index (and NAME_stream)
CHATBOT_FAISS = "faq-bot-faiss"  # the same with an HNSW index, over the fused embedder


def build_chatbots(repo: Path, work: Path) -> dict:
    """After build_encoders and build_generators: the chatbot embeds its FAQ with their files."""
    from tritonize.converters.chat.convert import convert_chatbot
    from tritonize.converters.chat.faq import demo_faq
    from tests.tiny_generators import GPT2

    # The HNSW one calls the fused embedder: its answers are compared with the exact one's (tests/chat/test_served.py).
    for name, index, embedder in ((CHATBOT, "exact", EMBEDDER), (CHATBOT_FAISS, "faiss", EMBEDDER_FUSED)):
        convert_chatbot(demo_faq(), embedder, GPT2, repo, name, threshold=0.5, top_k=3, index=index, log=lambda m: None)
    return {}


# Each model family adds the function that writes its test models into the shared repository.
from tests.torch_models import build_torch_flavours  # noqa: E402
from tests.tiny_rerankers import build_rerankers  # noqa: E402

BUILDERS = [build_encoders, build_generators, build_voices, build_chatbots, build_torch_flavours, build_rerankers]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict:
    repo = tmp_path_factory.mktemp("model_repository")
    work = tmp_path_factory.mktemp("checkpoints")
    checkpoints: dict = {"repository": repo}
    for build in BUILDERS:
        checkpoints.update(build(repo, work))
    return checkpoints


@pytest.fixture(scope="session")
def server(built, tmp_path_factory):
    config = ServerConfig(built["repository"], http_port=0, grpc_port=0, metrics_port=0,
                          log_file=tmp_path_factory.mktemp("logs") / "tritonserver.log")
    with TritonServer(config) as s:
        yield s


@pytest.fixture(scope="session")
def grpc_client(server):
    from tritonize.client import Client

    with Client(server.grpc_url, "grpc") as c:
        yield c


@pytest.fixture(scope="session")
def http_client(server):
    from tritonize.client import Client

    with Client(server.http_url, "http") as c:
        yield c


@pytest.fixture(scope="session")
def raw_grpc(server):
    """The plain tritonclient, for requests our client would never build."""
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


@pytest.fixture(scope="session")
def small_plan(built, tmp_path_factory):
    """`tritonize plan` on a small grid (the classifier at batch <= 4 and 16, 1 and 4 users, 2 s each,
    two rounds, then the chosen config again):
    its output folder and the CLI result. tests/planner/test_load_and_plan.py checks the plan, tests/deploy/test_kubernetes.py deploys it."""
    from typer.testing import CliRunner

    from tritonize.planner.scenarios import Scenario, WordCounts
    from tritonize.cli import app

    work = tmp_path_factory.mktemp("plan")
    sc = Scenario(name="test", pipeline="classify", model=CLASSIFIER, words=WordCounts(median=8, sigma=0.5, min=2, max=32),
                  pool_size=200).save(work / "scenario.json")
    result = CliRunner().invoke(app, [
        "plan", "--scenario", str(sc), "--repository", str(built["repository"]), "--max-batch-size", "4,16", "--threads", "1",
        "--users", "1,4", "--seconds", "2", "--slo-ms", "200", "--target-rps", "300", "--no-pin", "--confirm", "--confirm-seconds", "2", "--rounds", "2",
        "--out", str(work / "plan"),
    ])
    return work / "plan", result


@pytest.fixture()
def still_serving(server, grpc_client):
    """After the test body: the server is ready and a good request still gets a good answer."""
    yield
    assert server.is_ready()
    e = grpc_client.embed(["still here"], model=EMBEDDER)
    assert e.shape == (1, 384) and abs(float((e**2).sum()) - 1) < 1e-5
