"""Text generation against the real server: parity with Hugging Face `generate`, sampling, streaming,
continuous batching, limits and cancellation (tiny random GPT-2 and T5 built in tests/tiny_generators)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tritonize.planner.triton_stats import metrics
from tritonize.client import AsyncGenerationClient, GenerationClient, TritonizeError
from tests.tiny_generators import GPT2, GPT2_LIMITS, T5
from tests.torch_models import GPT2_TORCH, T5_TORCH

ALL = [GPT2, T5, GPT2_TORCH, T5_TORCH]  # ONNX Runtime and PyTorch engines, same checkpoints

PROMPTS = [
    "the",
    "the quick brown fox",
    "triton serves models with dynamic batching and ensembles",
    "tokens stream back one piece at a time while the batch keeps running, and the lazy dog sleeps",
]
NEW_TOKENS = 24


# -- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen(server):
    return GenerationClient(server.grpc_url, timeout_s=60)


@pytest.fixture(scope="module")
def hf_gpt2(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = built["tiny_gpt2"]
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def hf_t5(built):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = built["tiny_t5"]
    return AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def hf_greedy(model_and_tokenizer, prompt: str, n: int) -> list[int]:
    import torch

    model, tok = model_and_tokenizer
    enc = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=n, pad_token_id=model.config.pad_token_id or model.config.eos_token_id)
    start = 1 if model.config.is_encoder_decoder else enc["input_ids"].shape[1]  # T5 output begins with the start token
    return out[0, start:].tolist()


def metric(server, name: str, model: str) -> float:
    """A tritonize_* metric of `model` on /metrics, with the updates of finished requests landed."""
    return metrics(server.metrics_url).get(f"{name}{{{model}}}", 0.0)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture()
def still_generating(server, gen):
    """After the test body: the server is ready and a good request still gets a good answer."""
    yield
    assert server.is_ready()
    chunk = gen.generate_chunk("the quick", model=GPT2, max_new_tokens=3)
    assert len(chunk.token_ids) >= 1 and chunk.finish_reason in ("length", "eos")


# -- conversion -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [GPT2, T5])
def test_converter_checked_parity_of_first_and_cached_steps(built, name):
    report = json.loads((built["repository"] / name / "tritonize.json").read_text())["report"]
    allowed = report["tolerance"] * max(1.0, report["logits_scale"])
    assert 0 < report["max_abs_error_first_step"] <= allowed and 0 < report["max_abs_error_cached_step"] <= allowed
    config = (built["repository"] / name / "config.pbtxt").read_text()
    assert "decoupled: true" in config and "max_sequences" in config and "max_queue" in config


# -- parity with Hugging Face -------------------------------------------------------------------------
@pytest.mark.parametrize("model", ALL)
def test_greedy_ids_equal_hugging_face_solo_and_eight_at_once(gen, hf_gpt2, hf_t5, model):
    reference = hf_gpt2 if model in (GPT2, GPT2_TORCH) else hf_t5
    expected = [hf_greedy(reference, p, NEW_TOKENS) for p in PROMPTS]
    assert len({tuple(e) for e in expected}) == len(PROMPTS), "the tiny model must answer differently per prompt"
    assert max(len(e) for e in expected) > 5 and any(len(set(e)) > 3 for e in expected), "outputs must vary along the sequence"
    solo = [gen.generate_chunk(p, model=model, max_new_tokens=NEW_TOKENS).token_ids for p in PROMPTS]
    assert solo == expected
    prompts = PROMPTS * 2  # 8 at once
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: gen.generate_chunk(p, model=model, max_new_tokens=NEW_TOKENS).token_ids, prompts))
    assert together == expected * 2


@pytest.mark.parametrize("model", ALL)
def test_eight_concurrent_streams_run_as_one_batch(server, gen, model):
    steps, rows = metric(server, "tritonize_generation_steps_total", model), metric(server, "tritonize_generation_step_rows_total", model)

    async def eight():
        async with AsyncGenerationClient(server.grpc_url) as c:  # one channel: the eight arrive together
            return await asyncio.gather(*(c.generate_chunk(p, model=model, max_new_tokens=300) for p in PROMPTS * 2))

    results = asyncio.run(eight())
    assert sum(len(r.token_ids) for r in results) > 8 * 50
    d_steps = metric(server, "tritonize_generation_steps_total", model) - steps
    d_rows = metric(server, "tritonize_generation_step_rows_total", model) - rows
    assert d_rows / d_steps > 2, f"mean decode batch {d_rows / d_steps:.2f}: the sequences were not batched"


# -- sampling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [GPT2, GPT2_TORCH])
def test_seeded_sampling_is_reproducible_and_seeds_differ(gen, model):
    params = dict(model=model, max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.1)
    a = gen.generate_chunk(PROMPTS[1], seed=7, **params).token_ids
    assert gen.generate_chunk(PROMPTS[1], seed=7, **params).token_ids == a
    others = {tuple(gen.generate_chunk(PROMPTS[1], seed=s, **params).token_ids) for s in (8, 9, 10)}
    assert tuple(a) not in others or len(others) > 1
    assert len(others | {tuple(a)}) >= 3


def test_sampled_stream_equals_sampled_whole_text(gen):
    params = dict(model=GPT2, max_new_tokens=30, temperature=0.8, top_k=20, seed=3)
    streamed = list(gen.stream_chunks(PROMPTS[2], **params))
    whole = gen.generate_chunk(PROMPTS[2], **params)
    assert [t for c in streamed for t in c.token_ids] == whole.token_ids
    assert "".join(c.text for c in streamed) == whole.text


# -- streaming --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ALL)
def test_stream_equals_whole_text_in_at_least_as_many_pieces_as_tokens(gen, model):
    for prompt in PROMPTS:
        chunks = list(gen.stream_chunks(prompt, model=model, max_new_tokens=NEW_TOKENS))
        whole = gen.generate_chunk(prompt, model=model, max_new_tokens=NEW_TOKENS)
        tokens = [t for c in chunks for t in c.token_ids]
        assert tokens == whole.token_ids
        assert "".join(c.text for c in chunks) == whole.text == "".join(gen.stream(prompt, model=model, max_new_tokens=NEW_TOKENS))
        assert len(chunks) >= len(tokens)  # one response per token, then the final one
        assert chunks[-1].finish_reason in ("length", "eos") and not any(c.finish_reason for c in chunks[:-1])


def test_stop_string_ends_generation_before_it(gen):
    text = gen.generate(PROMPTS[1], model=GPT2, max_new_tokens=NEW_TOKENS)
    stop = text[5:8]
    assert stop.strip()
    chunk = gen.generate_chunk(PROMPTS[1], model=GPT2, max_new_tokens=NEW_TOKENS, stop=[stop, "never-appears"])
    assert chunk.finish_reason == "stop" and chunk.text == text[: text.index(stop)]
    assert "".join(gen.stream(PROMPTS[1], model=GPT2, max_new_tokens=NEW_TOKENS, stop=stop)) == chunk.text


def test_async_client_streams_and_generates(server):
    async def main():
        async with AsyncGenerationClient(server.grpc_url) as c:
            pieces = [p async for p in c.stream(PROMPTS[1], model=GPT2, max_new_tokens=NEW_TOKENS)]
            whole = await c.generate(PROMPTS[1], model=GPT2, max_new_tokens=NEW_TOKENS)
            eight = await asyncio.gather(*(c.generate(p, model=T5, max_new_tokens=10) for p in PROMPTS * 2))
            return pieces, whole, eight

    pieces, whole, eight = asyncio.run(main())
    assert "".join(pieces) == whole and eight[:4] == eight[4:]


# -- continuous batching ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ALL)
def test_request_arriving_mid_generation_joins_the_batch_and_keeps_its_solo_output(server, gen, model):
    """The late request's cache is shorter than the running one's: they still share decode forwards."""
    late_prompt = PROMPTS[3]
    solo = gen.generate_chunk(late_prompt, model=model, max_new_tokens=NEW_TOKENS).token_ids
    joined = metric(server, "tritonize_generation_joined_running_total", model)
    steps, rows = metric(server, "tritonize_generation_steps_total", model), metric(server, "tritonize_generation_step_rows_total", model)
    events: list[str] = []
    long_stream = gen.stream_chunks(PROMPTS[1], model=model, max_new_tokens=400, repetition_penalty=1.3)
    for _ in range(3):
        next(long_stream)  # the long sequence is now mid-generation
    late: dict = {}

    def run_late():
        late["chunk"] = gen.generate_chunk(late_prompt, model=model, max_new_tokens=NEW_TOKENS)
        events.append("late finished")

    thread = threading.Thread(target=run_late)
    thread.start()
    rest = list(long_stream)
    events.append("long finished")
    thread.join(30)
    assert late["chunk"].token_ids == solo
    assert rest[-1].finish_reason == "length", "the long sequence must still be running when the late one arrives"
    assert events == ["late finished", "long finished"]  # it did not wait for the running batch to end
    assert metric(server, "tritonize_generation_joined_running_total", model) >= joined + 1
    d_rows = metric(server, "tritonize_generation_step_rows_total", model) - rows
    d_steps = metric(server, "tritonize_generation_steps_total", model) - steps
    assert d_rows >= d_steps + len(solo) - 1, "the late sequence's decode steps ran in the same forwards as the long one"


@pytest.mark.parametrize("model", ALL)
def test_requests_coming_and_going_back_to_back_keep_their_solo_outputs(server, gen, model):
    """Four callers, three requests each, of different lengths: rows are freed and reused constantly."""
    plan = [(PROMPTS[(u + r) % 4], 8 + 11 * ((u * 3 + r) % 4)) for u in range(4) for r in range(3)]
    solo = {(p, n): gen.generate_chunk(p, model=model, max_new_tokens=n).token_ids for p, n in set(plan)}

    async def user(c, u):
        return [(await c.generate_chunk(p, model=model, max_new_tokens=n)).token_ids for p, n in plan[u * 3 : u * 3 + 3]]

    async def main():
        async with AsyncGenerationClient(server.grpc_url) as c:
            return await asyncio.gather(*(user(c, u) for u in range(4)))

    results = [ids for per_user in asyncio.run(main()) for ids in per_user]
    assert results == [solo[key] for key in plan]


# -- bad input, limits, cancellation ----------------------------------------------------------------
BAD = [
    ({"prompt": ""}, r"TEXT is empty"),
    ({"prompt": "the " * 600}, r"prompt is \d+ tokens; the limit is 511 tokens \(the model's context is 512\)"),
    ({"max_new_tokens": 0}, r"max_new_tokens must be between 1 and 400, got 0"),
    ({"max_new_tokens": -3}, r"max_new_tokens must be between 1 and 400, got -3"),
    ({"max_new_tokens": 401}, r"max_new_tokens must be between 1 and 400, got 401"),
    ({"prompt": "the " * 300, "max_new_tokens": 400}, r"prompt \(\d+ tokens\) \+ max_new_tokens \(400\) exceeds the model's context of 512"),
    ({"temperature": -0.5}, r"temperature must be >= 0 \(0 is greedy\), got -0.5"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
    ({"top_k": -1}, r"top_k must be >= 0"),
    ({"repetition_penalty": 0.0}, r"repetition_penalty must be > 0"),
    ({"beams": 4, "lenght": 3}, r"unknown parameter\(s\) beams, lenght; accepted: max_new_tokens, temperature"),
    ({"max_new_tokens": "many"}, r"max_new_tokens must be an integer, got 'many'"),
]


@pytest.mark.usefixtures("still_generating")
@pytest.mark.parametrize("model", [GPT2, GPT2_TORCH])
@pytest.mark.parametrize("case,message", BAD, ids=[m.split(" ")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_gets_a_clear_error(gen, case, message, model):
    case = dict(case)
    prompt = case.pop("prompt", "the quick")
    with pytest.raises(TritonizeError, match=message):
        gen.generate(prompt, model=model, **case)
    with pytest.raises(TritonizeError, match=message):
        list(gen.stream(prompt, model=model, **case))


def test_prompt_over_the_encoder_context_is_rejected_for_t5(gen):
    with pytest.raises(TritonizeError, match=r"prompt is \d+ tokens; the limit is 128 tokens"):
        gen.generate("the quick " * 200, model=T5)


@pytest.mark.usefixtures("still_generating")
def test_bad_request_among_good_ones_fails_alone(gen):
    with ThreadPoolExecutor(6) as pool:
        good = [pool.submit(gen.generate_chunk, p, model=GPT2, max_new_tokens=NEW_TOKENS) for p in PROMPTS]
        bad = pool.submit(gen.generate, "the", model=GPT2, temperature=-1)
        with pytest.raises(TritonizeError, match="temperature"):
            bad.result()
        assert all(len(f.result().token_ids) >= 1 for f in good)


@pytest.mark.usefixtures("still_generating")
def test_past_the_queue_limit_requests_get_overloaded(server):
    """tiny-gpt2-limits runs one sequence and queues one: the rest of a burst is refused, clearly."""
    rejected = metric(server, "tritonize_generation_rejected_overloaded_total", GPT2_LIMITS)

    async def burst():
        async with AsyncGenerationClient(server.grpc_url) as c:
            calls = [c.generate_chunk(PROMPTS[1], model=GPT2_LIMITS, max_new_tokens=400, repetition_penalty=1.3) for _ in range(6)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    errors = [r for r in results if isinstance(r, Exception)]
    done = [r for r in results if not isinstance(r, Exception)]
    assert len(done) >= 2 and errors, results
    for e in errors:
        assert isinstance(e, TritonizeError)
        m = re.search(r"overloaded: (\d+) requests in flight \((\d+) running, (\d+) waiting for a sequence slot\); the capacity is "
                      r"(\d+) \(max_sequences=1 \+ max_queue=1\); retry later", str(e))
        assert m, str(e)
        in_flight, running, waiting, capacity = map(int, m.groups())
        assert in_flight == running + waiting == capacity == 2 and running <= 1  # the configured limits, not more
    assert metric(server, "tritonize_generation_rejected_overloaded_total", GPT2_LIMITS) == rejected + len(errors)
    assert metric(server, "tritonize_generation_capacity_requests", GPT2_LIMITS) == 2


@pytest.mark.usefixtures("still_generating")
def test_cancelled_stream_frees_its_slot(server, gen):
    cancelled = metric(server, "tritonize_generation_cancelled_total", GPT2_LIMITS)
    stream = gen.stream_chunks(PROMPTS[1], model=GPT2_LIMITS, max_new_tokens=400, repetition_penalty=1.3)
    next(stream)
    stream.close()  # the client cancels the request
    assert wait_for(lambda: metric(server, "tritonize_generation_cancelled_total", GPT2_LIMITS) == cancelled + 1)
    assert wait_for(lambda: metric(server, "tritonize_generation_running_sequences", GPT2_LIMITS) == 0)
    assert wait_for(lambda: metric(server, "tritonize_generation_in_flight_requests", GPT2_LIMITS) == 0)
    # The one slot is free again: a new request runs to its end.
    assert gen.generate_chunk(PROMPTS[0], model=GPT2_LIMITS, max_new_tokens=5).finish_reason in ("length", "eos")


# -- the runtime's batch bookkeeping, on the served graphs (in process) -------------------------------
def _model(built, name):
    from tritonize.runtime.engines import EngineSpec
    from tritonize.runtime.generation.engine_onnx import CausalLM, Seq2SeqLM

    folder = built["repository"] / name / "1"
    if name in (GPT2_TORCH, T5_TORCH):
        from tritonize.runtime.generation.engine_torch import TorchCausalLM, TorchSeq2SeqLM

        spec = EngineSpec("torch", "cpu", "float32", 1)
        return TorchCausalLM(folder, spec) if name == GPT2_TORCH else TorchSeq2SeqLM(folder, spec, decoder_start_token_id=0)
    return CausalLM(folder, 1) if name == GPT2 else Seq2SeqLM(folder, 1, decoder_start_token_id=0)


def _solo_logits(built, name, prompt, steps):
    m = _model(built, name)
    logits, slot = m.prefill(prompt)
    slots, out = {0: slot}, [logits]
    for _ in range(steps):
        out.append(m.decode([0], slots, [int(out[-1].argmax())])[0])
    return out


@pytest.mark.parametrize("name", ALL)
def test_a_joiner_takes_a_free_row_in_place_and_every_row_stays_exact(built, name):
    import numpy as np

    prompts = {0: [5, 6, 7, 8, 9, 10, 11, 12], 1: [20, 21, 22], 2: [30, 31, 32, 33]}
    m = _model(built, name)
    slots, history = {}, {k: [] for k in prompts}
    for k in (0, 1):
        logits, slots[k] = m.prefill(prompts[k])
        history[k].append(logits)
    for _ in range(3):
        logits = m.decode([0, 1], slots, [int(history[k][-1].argmax()) for k in (0, 1)])
        for row, k in enumerate((0, 1)):
            history[k].append(logits[row])
    batch = m._batch
    del slots[1]  # sequence 1 leaves, sequence 2 joins: it must reuse the free row, no rebuild
    logits, slots[2] = m.prefill(prompts[2])
    history[2].append(logits)
    for _ in range(4):
        logits = m.decode([0, 2], slots, [int(history[k][-1].argmax()) for k in (0, 2)])
        for row, k in enumerate((0, 2)):
            history[k].append(logits[row])
    assert m._batch is batch and batch.rows == [0, 2]
    for k, steps in ((0, 7), (1, 3), (2, 4)):
        for got, want in zip(history[k], _solo_logits(built, name, prompts[k], steps), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))
            assert got.argmax() == want.argmax()


# -- the command line ---------------------------------------------------------------------------------
def test_infer_gpt2_stream_prints_the_generated_text(server, gen):
    from typer.testing import CliRunner

    from tritonize.cli import app

    expected = gen.generate(PROMPTS[1], model=GPT2, max_new_tokens=12)
    args = ["infer", "gpt2", PROMPTS[1], "--stream", "--model", GPT2, "--max-new-tokens", "12", "--url", server.grpc_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(expected) and "finish reason: length" in result.output
    bad = CliRunner().invoke(app, ["infer", "generate", GPT2, "hi", "--max-new-tokens", "0", "--url", server.grpc_url])
    assert bad.exit_code == 1 and "max_new_tokens must be between 1 and 400, got 0" in bad.output


@pytest.mark.parametrize("onnx,torch_name", [(GPT2, GPT2_TORCH), (T5, T5_TORCH)])
def test_torch_engine_prefills_prompts_together_as_alone_and_agrees_with_onnx(built, onnx, torch_name):
    """Several prompts in one (padded) prefill forward give each prompt's solo logits and cache, and the
    PyTorch engine's logits match the ONNX graphs' on prefill and cached steps."""
    import numpy as np

    prompts = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22], [30, 31, 32, 33]]
    t, o = _model(built, torch_name), _model(built, onnx)
    together = t.prefill_many(prompts)
    for prompt, (logits, slot) in zip(prompts, together):
        solo, solo_slot = t.prefill(prompt)
        scale = max(1.0, float(np.abs(solo).max()))
        np.testing.assert_allclose(logits, solo, rtol=0, atol=1e-5 * scale)
        assert slot.cached == solo_slot.cached and [c.shape for c in slot.own] == [c.shape for c in solo_slot.own]
        reference, _ = o.prefill(prompt)
        np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-3 * scale)  # LOGITS_TOLERANCE, as for ONNX vs PyTorch
    slots = {k: s for k, (_, s) in enumerate(together)}
    o_slots = {k: o.prefill(p)[1] for k, p in enumerate(prompts)}
    tokens = [int(lg.argmax()) for lg, _ in together]
    got, want = t.decode([0, 1, 2], slots, tokens), o.decode([0, 1, 2], o_slots, tokens)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * max(1.0, float(np.abs(want).max())))
    assert (got.argmax(-1) == want.argmax(-1)).all()
