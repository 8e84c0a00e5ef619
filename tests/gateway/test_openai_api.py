"""The OpenAI-compatible gateway against the real server, driven by the official `openai` SDK (and raw
HTTP where the SDK would hide what is checked): results equal the project's own clients, errors come in
OpenAI's envelope with the right status, keys, body limit, readiness and cancellation."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import wave

import httpx
import numpy as np
import openai
import pytest

from tritonize.client import GenerationClient, SpeechClient
from tritonize.gateway.app import GatewaySettings
from tritonize.server.launcher import free_port
from tests.conftest import CLASSIFIER, EMBEDDER, VOICE
from tests.gateway.conftest import error_of, running
from tests.generation.test_served import metric, wait_for
from tests.tiny_generators import GPT2, GPT2_LIMITS, T5

KEY = "sk-test-0123456789abcdef"
TEXTS = ["the quick brown fox", "Triton batches requests of different lengths together.", "hi"]
PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def strict(server, tmp_path_factory):
    """A second gateway with an API key file and a small body limit."""
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# comment\n\n{KEY}\nsk-other\n")
    from tritonize.gateway.security import load_api_keys

    with running(GatewaySettings(server.grpc_url, port=free_port(), api_keys=load_api_keys(keys), max_body_bytes=4096)) as url:
        yield url


@pytest.fixture(scope="module")
def gen(server):
    return GenerationClient(server.grpc_url, timeout_s=60)


# -- models and health ---------------------------------------------------------------------------
def test_models_lists_every_pipeline_with_its_kind_and_no_steps(oai, base):
    cards = {m.id: m for m in oai.models.list().data}
    kinds = {name: cards[name].kind for name in (EMBEDDER, CLASSIFIER, GPT2, T5, VOICE)}
    assert kinds == {EMBEDDER: "embedding", CLASSIFIER: "classification", GPT2: "generation", T5: "generation", VOICE: "speech"}
    assert not [n for n in cards if n.endswith(("_tokenizer", "_model", "_postprocess", "_stream", "_frontend"))]
    assert cards[GPT2].chat_template is True and cards[T5].chat_template is False
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}


@pytest.mark.unit
def test_a_server_that_is_not_ready_gets_503_with_retry_after():
    with running(GatewaySettings(f"127.0.0.1:{free_port()}", port=free_port(), ready_poll_s=0.2)) as url:
        r = httpx.get(f"{url}/health")
        assert r.headers["retry-after"] == "1"
        error_of(r, 503, code="server_not_ready")
        r = httpx.post(f"{url}/v1/embeddings", json={"model": EMBEDDER, "input": "hi"})
        assert r.headers["retry-after"] == "1"
        error_of(r, 503, code="server_not_ready")
        error_of(httpx.get(f"{url}/v1/models"), 503)


# -- embeddings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["float", "base64", None])  # None: the SDK asks for base64 and decodes it
def test_embeddings_equal_client_embed_and_count_real_tokens(oai, grpc_client, encoding):
    import base64

    from transformers import AutoTokenizer

    from tritonize.converters.checkpoints import resolve

    got = oai.embeddings.create(model=EMBEDDER, input=TEXTS, **({"encoding_format": encoding} if encoding else {}))
    rows = [d.embedding for d in sorted(got.data, key=lambda d: d.index)]
    if encoding == "base64":
        rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
    vectors = np.array(rows, dtype=np.float32)
    expected = grpc_client.embed(TEXTS, model=EMBEDDER)
    assert vectors.shape == expected.shape == (3, 384)
    cosine = (vectors * expected).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 1 - 1e-6
    tokenizer = AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2"))
    assert got.usage.prompt_tokens == sum(len(tokenizer(t, truncation=True)["input_ids"]) for t in TEXTS)
    one = oai.embeddings.create(model=EMBEDDER, input=TEXTS[0], dimensions=384)
    assert np.allclose(one.data[0].embedding, expected[0], atol=1e-6)


def test_embeddings_refuse_token_arrays_and_other_dimensions(base):
    r = httpx.post(f"{base}/v1/embeddings", json={"model": EMBEDDER, "input": [[1, 2, 3]]})
    assert "token arrays are not accepted" in error_of(r, 400, "input")["message"]
    r = httpx.post(f"{base}/v1/embeddings", json={"model": EMBEDDER, "input": "hi", "dimensions": 128})
    assert "dimensions must be 384" in error_of(r, 400, "dimensions")["message"]
    r = httpx.post(f"{base}/v1/embeddings", json={"model": EMBEDDER, "input": ["x"] * 2049})
    assert "the limit is 2048" in error_of(r, 400, "input")["message"]


# -- completions and chat ---------------------------------------------------------------------------
SAMPLING = {"greedy": {"temperature": 0}, "seeded": {"temperature": 0.9, "top_p": 0.95, "seed": 7}}


@pytest.mark.parametrize("model", [GPT2, T5])
@pytest.mark.parametrize("mode", list(SAMPLING))
def test_completions_equal_generation_client(oai, gen, model, mode):
    params = SAMPLING[mode]
    # A tiny random model may decode some prompts to tokens with no text; compare on one that has text.
    for prompt in (PROMPT, "the", "triton serves models with dynamic batching and ensembles"):
        expected = gen.generate_chunk(prompt, model=model, max_new_tokens=20, **params)
        if expected.text:
            break
    assert expected.text, "no candidate prompt gives text: the comparison would prove nothing"
    got = oai.completions.create(model=model, prompt=prompt, max_tokens=20, **params)
    assert got.choices[0].text == expected.text
    assert got.choices[0].finish_reason == {"length": "length", "eos": "stop"}[expected.finish_reason]
    assert got.usage.completion_tokens == len(expected.token_ids)
    assert got.usage.prompt_tokens == expected.prompt_tokens > 0
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_seeded_sampling_differs_from_greedy(gen):
    greedy = gen.generate(PROMPT, model=GPT2, max_new_tokens=20, temperature=0)
    assert gen.generate(PROMPT, model=GPT2, max_new_tokens=20, **SAMPLING["seeded"]) != greedy  # the test above can fail


def test_streamed_chunks_join_to_the_whole_text_and_end_with_done(oai, base):
    whole = oai.completions.create(model=GPT2, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    chunks = list(oai.completions.create(model=GPT2, prompt=PROMPT, max_tokens=30, temperature=0, stream=True,
                                         stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len(pieces) > 3 and "".join(pieces) == whole
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 30
    body = {"model": GPT2, "prompt": PROMPT, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "text_completion"


def test_a_stop_string_ends_the_text_before_it_with_finish_reason_stop(oai, gen):
    whole = gen.generate(PROMPT, model=GPT2, max_new_tokens=30)
    stop = whole[6:9]
    got = oai.completions.create(model=GPT2, prompt=PROMPT, max_tokens=30, stop=[stop])
    assert got.choices[0].text == whole[: whole.find(stop)] and got.choices[0].finish_reason == "stop"


def test_chat_renders_the_checkpoints_template_or_the_plain_one(oai, gen, built):
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the quick brown fox"}]
    templated = AutoTokenizer.from_pretrained(built["tiny_gpt2"]).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    plain = "System: be brief\nUser: the quick brown fox\nAssistant:"
    for model, prompt in ((GPT2, templated), (T5, plain)):
        got = oai.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
        expected = gen.generate_chunk(prompt, model=model, max_new_tokens=16)
        assert got.choices[0].message.content == expected.text and got.choices[0].message.role == "assistant"
        assert got.usage.prompt_tokens == expected.prompt_tokens
    stream = list(oai.chat.completions.create(model=GPT2, messages=messages, max_tokens=16, temperature=0, stream=True))
    assert stream[0].choices[0].delta.role == "assistant" and stream[-1].choices[0].finish_reason in ("length", "stop")
    assert "".join(c.choices[0].delta.content or "" for c in stream) == gen.generate(templated, model=GPT2, max_new_tokens=16)


# -- speech ---------------------------------------------------------------------------------------
def test_speech_is_a_wav_of_the_speech_clients_audio_and_pcm_is_its_samples(oai, server):
    text = "Hello there. This is the second sentence."
    with SpeechClient(server.grpc_url) as speech:
        streamed = np.concatenate([a.samples for a in speech.stream(text, model=VOICE)])
        one_shot = speech.synthesize(text, model=VOICE)
        faster = np.concatenate([a.samples for a in speech.stream(text, model=VOICE, speaking_rate=speech.defaults(VOICE)["speaking_rate"] * 2)])
    data = oai.audio.speech.create(model=VOICE, voice=VOICE, input=text, response_format="wav").read()
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, one_shot.rate)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(samples, streamed)
    assert samples.shape == one_shot.samples.shape and np.abs(samples.astype(int) - one_shot.samples).max() <= 2
    pcm = oai.audio.speech.create(model=VOICE, voice="default", input=text, response_format="pcm", speed=2.0).read()
    assert np.array_equal(np.frombuffer(pcm, dtype="<i2"), faster) and len(faster) < len(streamed)


# -- errors ---------------------------------------------------------------------------------------
ERRORS = [
    ("/v1/embeddings", {"model": "no-such-model", "input": "hi"}, 404, "model"),
    ("/v1/embeddings", {"model": GPT2, "input": "hi"}, 400, "model"),
    ("/v1/embeddings", {"model": EMBEDDER, "input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
    ("/v1/completions", {"model": "no-such-model", "prompt": "hi"}, 404, "model"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "max_tokens": 100_000}, 400, "max_tokens"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "temperature": 5}, 400, "temperature"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "n": 2}, 400, "n"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "frobnicate": 1}, 400, "frobnicate"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "stream": True, "max_tokens": 100_000}, 400, "max_tokens"),
    ("/v1/completions", {"model": GPT2, "prompt": "hi", "top_k": -1}, 400, "top_k"),
    ("/v1/completions", {"model": T5, "prompt": "the quick " * 200}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi"}, 400, "model"),
    ("/v1/chat/completions", {"model": GPT2, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": GPT2, "messages": [{"role": "user", "content": "hi"}], "tools": [{}]}, 400, "tools"),
    ("/v1/chat/completions", {"model": VOICE, "messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("/v1/audio/speech", {"model": VOICE, "voice": "alloy", "input": "Hello."}, 400, "voice"),
    ("/v1/audio/speech", {"model": VOICE, "voice": VOICE, "input": "Hello.", "response_format": "mp3"}, 400, "response_format"),
    ("/v1/audio/speech", {"model": VOICE, "voice": VOICE, "input": "Hello.", "speed": 9}, 400, "speed"),
    ("/v1/audio/speech", {"model": VOICE, "voice": VOICE, "input": "?!... ---"}, 400, "input"),
]


@pytest.mark.parametrize("path, body, status, param", ERRORS, ids=[f"{p}:{s}:{q}" for p, _, s, q in ERRORS])
def test_each_error_has_its_status_and_the_envelope_naming_the_param(base, path, body, status, param):
    error = error_of(httpx.post(f"{base}{path}", json=body), status, param)
    assert error["type"] == "invalid_request_error" and error["message"]
    if param not in ("model", None):
        assert param in error["message"] or param in ("prompt", "input")


LONE_SURROGATE = [  # JSON's "\\ud800" decodes to a str that is not UTF-8: a 400 naming the field, never a 500
    ("/v1/embeddings", {"model": EMBEDDER, "input": ["ok", "bad \ud800"]}, "input"),
    ("/v1/completions", {"model": GPT2, "prompt": "bad \ud800", "max_tokens": 2}, "prompt"),
    ("/v1/chat/completions", {"model": GPT2, "messages": [{"role": "user", "content": "bad \ud800"}], "max_tokens": 2}, "messages"),
    ("/v1/audio/speech", {"model": VOICE, "voice": VOICE, "input": "Hello \ud800 there."}, "input"),
]


@pytest.mark.parametrize("path, body, param", LONE_SURROGATE, ids=[p for p, _, _ in LONE_SURROGATE])
def test_text_that_is_not_utf8_is_a_400_naming_the_field(base, path, body, param):
    r = httpx.post(f"{base}{path}", content=json.dumps(body), headers={"content-type": "application/json"})  # ASCII escapes
    message = error_of(r, 400, param)["message"]
    assert "not valid UTF-8" in message or "unable to parse raw data as a unicode string" in message, message


def test_bad_json_and_unknown_routes_use_the_envelope(base):
    r = httpx.post(f"{base}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in error_of(r, 400)["message"]
    error_of(httpx.get(f"{base}/v1/nothing-here"), 404, code="not_found")


def test_overload_is_429_with_retry_after_and_the_rest_finish(base, server):
    """tiny-gpt2-limits runs one sequence and queues one: the rest of a burst is refused, clearly."""
    body = {"model": GPT2_LIMITS, "prompt": PROMPT, "max_tokens": 400, "repetition_penalty": 1.3}

    async def burst():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*[c.post(f"{base}/v1/completions", json=body) for _ in range(6)])

    responses = asyncio.run(burst())
    refused = [r for r in responses if r.status_code == 429]
    assert refused and len([r for r in responses if r.status_code == 200]) >= 2, [r.status_code for r in responses]
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert "overloaded" in error_of(r, 429, code="server_overloaded")["message"]
    assert wait_for(lambda: metric(server, "tritonize_generation_running_sequences", GPT2_LIMITS) == 0)


def test_a_client_that_leaves_a_stream_frees_its_slot(base, server, gen):
    cancelled = metric(server, "tritonize_generation_cancelled_total", GPT2_LIMITS)
    body = {"model": GPT2_LIMITS, "prompt": PROMPT, "max_tokens": 400, "repetition_penalty": 1.3, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    assert wait_for(lambda: metric(server, "tritonize_generation_cancelled_total", GPT2_LIMITS) == cancelled + 1)
    assert wait_for(lambda: metric(server, "tritonize_generation_running_sequences", GPT2_LIMITS) == 0)
    assert gen.generate_chunk(PROMPT, model=GPT2_LIMITS, max_new_tokens=5).finish_reason in ("length", "eos")


# -- keys and body limit --------------------------------------------------------------------------
def test_api_keys_refuse_missing_and_wrong_keys_and_are_never_logged(strict, caplog):
    caplog.set_level(logging.DEBUG)
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        r = httpx.get(f"{strict}/v1/models", headers=headers)
        assert r.headers["www-authenticate"] == "Bearer"
        error_of(r, 401, code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{strict}/v1", api_key="sk-wrong", max_retries=0).models.list()
    for key in (KEY, "sk-other"):
        assert EMBEDDER in {m.id for m in openai.OpenAI(base_url=f"{strict}/v1", api_key=key, max_retries=0).models.list().data}
    assert httpx.get(f"{strict}/health").status_code == 200  # probes need no key
    assert KEY not in caplog.text and "sk-wrong" not in caplog.text


def test_a_body_over_the_limit_is_refused_before_triton(strict, server):
    from tritonize.client import Client

    headers = {"Authorization": f"Bearer {KEY}"}
    before = Client(server.grpc_url)._client.get_inference_statistics(EMBEDDER, as_json=True)["model_stats"][0]["inference_count"]
    big = json.dumps({"model": EMBEDDER, "input": "word " * 2000}).encode()
    r = httpx.post(f"{strict}/v1/embeddings", content=big, headers={**headers, "content-type": "application/json"})
    assert f"is {len(big)} bytes; the limit is 4096 bytes" in error_of(r, 413, code="request_too_large")["message"]
    parts = iter([big[i:i + 1000] for i in range(0, len(big), 1000)])  # no Content-Length: chunked
    chunked = httpx.post(f"{strict}/v1/embeddings", content=parts, headers={**headers, "content-type": "application/json"})
    error_of(chunked, 413, code="request_too_large")
    after = Client(server.grpc_url)._client.get_inference_statistics(EMBEDDER, as_json=True)["model_stats"][0]["inference_count"]
    assert after == before
    ok = httpx.post(f"{strict}/v1/embeddings", json={"model": EMBEDDER, "input": "small"}, headers=headers)
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] > 0


# -- Locust through the gateway -------------------------------------------------------------------
def test_bench_via_openai_runs_locust_through_a_gateway_it_starts(server, tmp_path):
    from typer.testing import CliRunner

    from tritonize.planner.scenarios import Scenario, WordCounts
    from tritonize.cli import app

    sc = Scenario(name="via", pipeline="embed", model=EMBEDDER, words=WordCounts(8, 0.5, 2, 32), pool_size=200, bad_every=10)
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--scenario", str(sc.save(tmp_path / "sc.json")), "--url", server.grpc_url,
                                      "--http-url", server.http_url, "--users", "2", "--seconds", "3", "--via", "openai",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    point = json.loads((out / "results.json").read_text())["points"][0]
    assert point["system"].endswith("via OpenAI gateway") and point["requests"] > 20
    assert 0 < point["failures"] and abs(point["failures"] / point["requests"] - 0.1) < 0.07  # the refused token arrays
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["triton"][f"{EMBEDDER}_model"]["inferences"] >= point["requests"] - point["failures"] - 4  # Triton saw them


def test_locust_streams_generations_through_the_gateway(base, tmp_path):
    import csv

    from tritonize.planner.load import run_locust
    from tritonize.planner.scenarios import Scenario, WordCounts

    sc = Scenario(name="gen", pipeline="generate", model=GPT2, words=WordCounts(8, 0.5, 2, 32), pool_size=50,
                  params={"max_new_tokens": 8, "temperature": 0}).save(tmp_path / "gen.json")
    r = run_locust(sc, base, "openai", users=2, seconds=3, out_prefix=tmp_path / "gen", system="gateway")
    with open(tmp_path / "gen_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert r.failures == 0 and int(rows["generate"]["Request Count"]) > 2
    assert 1 <= float(rows["generate"]["Average Content Size"]) <= 8
    assert 0 < float(rows["generate: time to first token"]["Average Response Time"]) < float(rows["generate"]["Average Response Time"])


@pytest.mark.parametrize("message, status, expected, param", [
    ("overloaded: 2 requests in flight (1 running, 1 waiting for a sequence slot); the capacity is 2 (max_sequences=1 + max_queue=1); retry later", None, 429, None),
    ("Exceeds maximum queue size", "StatusCode.UNAVAILABLE", 429, None),
    ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", 503, None),
    ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", 504, None),
    ("top_p must be in (0, 1], got 2.0", None, 400, "top_p"),
    ("prompt is 900 tokens; the limit is 511 tokens", None, 400, "messages"),
    ("engine thread died", "StatusCode.INTERNAL", 500, None),
])
@pytest.mark.unit
def test_triton_errors_map_to_statuses(message, status, expected, param):
    from tritonize.client import TritonizeError
    from tritonize.gateway.errors import from_triton

    e = from_triton(TritonizeError(message, status, "m"), "messages")
    assert (e.status, e.param) == (expected, param) and message in e.message
    assert ("Retry-After" in e.headers) == (expected in (429, 503))
