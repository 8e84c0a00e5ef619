"""Batched prefill on the ONNX Runtime generators: prompts that join in the same engine step share one
forward and get exactly what a solo prefill gives them (logits and every slot's cache), in process on the
served graphs and through the real server (tiny random GPT-2 and T5 from tests/tiny_generators)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tritonize.client import AsyncGenerationClient, GenerationClient
from tritonize.runtime.generation.engine import Engine, Job
from tritonize.runtime.generation.engine_onnx import CausalLM, Seq2SeqLM
from tritonize.runtime.generation.params import Limits, SamplingParams
from tritonize.runtime.generation.prefill import plan_prefill
from tritonize.runtime.generation.text import TokenBytes
from tests.generation.test_served import hf_greedy, hf_gpt2, hf_t5, metric  # noqa: F401  (fixtures)
from tests.tiny_generators import GPT2, T5

# fp32 arithmetic over a padded batch differs from the solo forward only by summation order.
TOLERANCE = 1e-4  # x max(1, largest |value| of the solo result)
LENGTHS = [1, 4, 23, 97]  # very different prompt lengths in one forward
NEW_TOKENS = 12


def onnx_model(built, name):
    folder = built["repository"] / name / "1"
    return CausalLM(folder, 1) if name == GPT2 else Seq2SeqLM(folder, 1, decoder_start_token_id=0)


def token_prompts(lengths: list[int], vocab: int = 100) -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [rng.integers(3, vocab, n).tolist() for n in lengths]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != solo {want.shape}"
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * max(1.0, float(np.abs(want).max())), err_msg=what)


@pytest.mark.parametrize("name", [GPT2, T5])
def test_prefill_many_gives_every_prompt_its_solo_logits_and_cache(built, name):
    m = onnx_model(built, name)
    prompts = token_prompts(LENGTHS)
    together = m.prefill_many(prompts)
    assert len(together) == len(prompts)
    for prompt, (logits, slot) in zip(prompts, together):
        solo_logits, solo = m.prefill(prompt)
        assert_close(logits, solo_logits, f"logits, prompt of {len(prompt)}")
        assert logits.argmax() == solo_logits.argmax()
        assert (slot.cached, slot.encoder_length) == (solo.cached, solo.encoder_length)
        assert len(slot.own) == len(solo.own) and len(slot.cross) == len(solo.cross)
        for i, (got, want) in enumerate(zip(slot.own + slot.cross, solo.own + solo.cross)):
            assert_close(got, want, f"cache tensor {i}, prompt of {len(prompt)}")
    assert len({int(lg.argmax()) for lg, _ in together}) > 1, "the tiny model must answer differently per prompt"


@pytest.mark.parametrize("name", [GPT2, T5])
def test_greedy_continuations_after_batched_prefill_equal_hugging_face_generate(built, hf_gpt2, hf_t5, name):
    texts = ["the", "the quick brown fox", "triton serves models with dynamic batching and ensembles",
             "tokens stream back one piece at a time while the batch keeps running, and the lazy dog sleeps"]
    reference = hf_gpt2 if name == GPT2 else hf_t5
    expected = [hf_greedy(reference, t, NEW_TOKENS) for t in texts]
    assert len({tuple(e) for e in expected}) == len(texts), "the tiny model must answer differently per prompt"
    m = onnx_model(built, name)
    tok = reference[1]
    prompts = [tok(t).input_ids for t in texts]
    first = m.prefill_many(prompts)
    slots = {k: slot for k, (_, slot) in enumerate(first)}
    got = {k: [int(logits.argmax())] for k, (logits, _) in enumerate(first)}
    members = list(slots)
    for _ in range(NEW_TOKENS - 1):
        logits = m.decode(members, slots, [got[k][-1] for k in members])
        for row, k in enumerate(members):
            got[k].append(int(logits[row].argmax()))
    assert [got[k] for k in members] == expected


class RecordingCausalLM(CausalLM):
    """The served GPT-2 graph, noting the shape of every prefill forward it runs."""

    def __init__(self, folder, threads):
        super().__init__(folder, threads)
        self.forwards: list[tuple[int, int]] = []  # (rows, padded length)

    def prefill_many(self, prompts):
        self.forwards.append((len(prompts), max(map(len, prompts))))
        return super().prefill_many(prompts)


class Collect:
    """A sink that keeps what the engine delivers."""

    def __init__(self):
        self.ids: list[int] = []
        self.reason = None

    def piece(self, text, token_ids, finish_reason):
        self.ids += token_ids
        self.reason = finish_reason or self.reason

    def error(self, exc):
        raise AssertionError(f"unexpected engine error: {exc}")

    def cancelled(self):
        return False


def test_engine_groups_joining_prompts_within_the_token_budget_and_keeps_solo_outputs(built):
    budget = 64
    model = RecordingCausalLM(built["repository"] / GPT2 / "1", 1)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(built["repository"] / GPT2 / "1" / "tokenizer.json"))
    limits = Limits(max_context=512, max_new_tokens=NEW_TOKENS, max_sequences=16, max_prefill_tokens=budget)
    engine = Engine(model, TokenBytes(tokenizer), limits, eos_token_id=None)
    prompts = token_prompts([3, 5, 6, 7, 30, 31, 40, 90], vocab=tokenizer.get_vocab_size())
    sinks = [Collect() for _ in prompts]
    for prompt, sink in zip(prompts, sinks):
        engine.submit(Job(prompt, SamplingParams(max_new_tokens=NEW_TOKENS), sink))
    while engine.queue or engine.running:
        engine.step()  # in this thread: the first step admits all eight
    plan = plan_prefill(list(map(len, prompts)), budget, model.prefill_overhead_tokens)
    assert engine.counters["prefills"].value == len(prompts)
    assert engine.counters["prefill_forwards"].value == len(plan) < len(prompts)
    assert all(rows * width <= budget or rows == 1 for rows, width in model.forwards), model.forwards
    assert (1, 90) in model.forwards, "the prompt over the budget runs alone"
    assert any(rows > 2 for rows, _ in model.forwards), f"short prompts must share a forward: {model.forwards}"
    assert all(sink.reason == "length" and len(sink.ids) == NEW_TOKENS for sink in sinks)
    alone = Engine(CausalLM(built["repository"] / GPT2 / "1", 1), TokenBytes(tokenizer), limits, eos_token_id=None)
    for prompt, sink in zip(prompts, sinks):
        own = Collect()
        alone.submit(Job(prompt, SamplingParams(max_new_tokens=NEW_TOKENS), own))
        while alone.queue or alone.running:
            alone.step()
        assert own.ids == sink.ids, f"prompt of {len(prompt)} tokens"


@pytest.mark.parametrize("model", [GPT2, T5])
def test_a_served_burst_shares_prefill_forwards_and_keeps_every_solo_text(server, model):
    """Sixteen short prompts of different lengths at once on eight slots: the queued half is admitted
    together as the first half finishes (same max_new_tokens), so prompts must have shared forwards. Short:
    on a CPU only prompts under ~12 tokens share (see plan_prefill's overhead_tokens)."""
    words = "triton serves models with dynamic batching".split()
    prompts = [" ".join(words[: 1 + i % len(words)]) for i in range(16)]
    gen = GenerationClient(server.grpc_url, timeout_s=60)
    solo = {p: gen.generate(p, model=model, max_new_tokens=NEW_TOKENS) for p in set(prompts)}
    assert len(set(solo.values())) > 3, "the tiny model must answer differently per prompt"
    prefills = metric(server, "tritonize_generation_prefills_total", model)
    forwards = metric(server, "tritonize_generation_prefill_forwards_total", model)

    async def burst():
        async with AsyncGenerationClient(server.grpc_url) as c:
            return await asyncio.gather(*(c.generate(p, model=model, max_new_tokens=NEW_TOKENS) for p in prompts))

    assert asyncio.run(burst()) == [solo[p] for p in prompts]
    d_prefills = metric(server, "tritonize_generation_prefills_total", model) - prefills
    d_forwards = metric(server, "tritonize_generation_prefill_forwards_total", model) - forwards
    assert d_prefills == len(prompts)
    assert d_forwards < d_prefills, f"{d_forwards:.0f} prefill forwards for {d_prefills:.0f} prompts: none were shared"
