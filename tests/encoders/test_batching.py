"""Concurrent requests of mixed lengths are batched by Triton, bucketed by length, and never mixed up."""

import asyncio
import random

import numpy as np
import pytest

from tritonize.planner.triton_stats import metrics
from tritonize.contract.model_config import engine_model

from tests.conftest import CLASSIFIER, CLASSIFIER_FUSED, EMBEDDER, EMBEDDER_FUSED
from tests.torch_models import EMBEDDER_TORCH

WORDS = "latency throughput queue replica padding token batch server model request answer length".split()


def mixed_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.choice([2, 4, 8, 16, 32, 64]))) for _ in range(n)]


def stats(raw_grpc, model: str) -> tuple[int, int]:
    s = raw_grpc.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def counters(server, model: str) -> dict[str, float]:
    tail = f"{{{model}}}"
    return {k[: -len(tail)]: v for k, v in metrics(server.metrics_url).items() if k.endswith(tail)}


async def send_all(url: str, model: str, batches: list[list[str]], embed: bool):
    from tritonize.client import AsyncClient

    async with AsyncClient(url) as c:
        call = c.embed if embed else c.classify
        return await asyncio.gather(*(call(b, model=model) for b in batches))


@pytest.mark.parametrize("model", [EMBEDDER, EMBEDDER_FUSED, EMBEDDER_TORCH])
def test_mixed_lengths_are_batched_and_each_answer_is_its_own(built, server, grpc_client, raw_grpc, model):
    texts = mixed_texts(96)
    solo = grpc_client.embed(texts, model=model)  # reference: rows computed without concurrency
    batches = [texts[i : i + 1 + i % 2] for i in range(0, len(texts), 2)]  # requests of 1 or 2 rows
    step = engine_model(built["repository"], model)  # NAME_model, or the fused pipeline itself
    assert step == (model if model == EMBEDDER_FUSED else f"{model}_model")
    inf0, exe0 = stats(raw_grpc, step)
    before = counters(server, step)

    results = asyncio.run(send_all(server.grpc_url, model, batches, embed=True))

    inf1, exe1 = stats(raw_grpc, step)
    after = counters(server, step)
    inferences, executions = inf1 - inf0, exe1 - exe0
    assert inferences == sum(len(b) for b in batches)
    assert executions <= inferences / 3, f"{executions} executions for {inferences} rows: not batched"
    for batch, got in zip(batches, results):
        expected = solo[[texts.index(t) for t in batch]]
        np.testing.assert_allclose(got, expected, atol=2e-5)
    real = after["tritonize_tokens_real_total"] - before["tritonize_tokens_real_total"]
    computed = after["tritonize_tokens_computed_total"] - before["tritonize_tokens_computed_total"]
    # The model step's bound per bucket: padded <= max(1.25 x real, real + 8 tokens x rows) (min_padding_tokens).
    rows = sum(len(b) for b in batches)
    assert real > 0 and computed <= 1.25 * real + 8 * rows, f"padding waste {computed / real:.2f}"
    assert computed / real <= 1.5


@pytest.mark.parametrize("model", [CLASSIFIER, CLASSIFIER_FUSED])
def test_classifier_rows_do_not_cross_talk_under_concurrency(server, grpc_client, model):
    texts = mixed_texts(40, seed=3)
    solo = np.stack([p.logits for p in grpc_client.classify(texts, model=model)])
    results = asyncio.run(send_all(server.grpc_url, model, [[t] for t in texts], embed=False))
    got = np.stack([r[0].logits for r in results])
    np.testing.assert_allclose(got, solo, atol=1e-5)
