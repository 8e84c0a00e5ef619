"""Every client failure is a TritonizeError naming the field or the cause, with Triton's status
whatever the transport (issue 10, items 10, 11, 12, 14), against the real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tritonize.cli import app
from tritonize.client import (
    AsyncGenerationClient, AsyncSpeechClient, ChatClient, Client, GenerationClient, SpeechClient, TritonizeError,
)
from tritonize.server.launcher import free_port
from tests.conftest import CHATBOT, EMBEDDER, VOICE
from tests.tiny_generators import GPT2, GPT2_LIMITS

BIG_SEED = 2**63  # one past int64


@pytest.fixture()
def ready_after(server, grpc_client):
    yield
    assert server.is_ready() and grpc_client.embed(["still here"], model=EMBEDDER).shape == (1, 384)


def arun(coro):
    return asyncio.run(coro)


# -- statuses in one vocabulary ----------------------------------------------------------------------------
@pytest.mark.parametrize("status, message, expected", [
    ("StatusCode.INVALID_ARGUMENT", "bad", ("INVALID_ARG", "bad")),
    ("400", "bad", ("INVALID_ARG", "bad")),
    ("503", "busy", ("UNAVAILABLE", "busy")),
    ("StatusCode.UNAVAILABLE", "gone", ("UNAVAILABLE", "gone")),
    (None, "[INVALID_ARG] MAX_AUDIO_SECONDS must be in (0, 600]", ("INVALID_ARG", "MAX_AUDIO_SECONDS must be in (0, 600]")),
    (None, "[UNAVAILABLE] overloaded: retry later", ("UNAVAILABLE", "overloaded: retry later")),
    (None, "overloaded: 1 sequences running (max_sequences=1); retry later", ("UNAVAILABLE", "overloaded: 1 sequences running (max_sequences=1); retry later")),
    (None, "Request for unknown model: 'x' is not found", ("NOT_FOUND", "Request for unknown model: 'x' is not found")),
    (None, "Failed to process the request(s) for model 'x', message: Stub process 'x' is not healthy.", ("UNAVAILABLE", None)),
    (None, "something else", (None, "something else")),
])
@pytest.mark.unit
def test_statuses_are_tritons_codes_whatever_the_transport_said(status, message, expected):
    from tritonize.client.status import normalize

    code, text = normalize(status, message)
    assert code == expected[0] and (expected[1] is None or text == expected[1])


# -- unknown models and unreachable servers ------------------------------------------------------------
def test_unknown_model_is_not_found_on_every_client(server):
    async def async_speech():
        async with AsyncSpeechClient(server.grpc_url) as c:
            return await c.synthesize("hello", model="no-such-voice")

    async def async_stream():
        async with AsyncGenerationClient(server.grpc_url) as c:
            return [p async for p in c.stream("hello", model="no-such-model")]

    calls = [
        lambda: Client(server.grpc_url).embed(["x"], model="no-such-model"),
        lambda: Client(server.http_url, "http").embed(["x"], model="no-such-model"),
        lambda: SpeechClient(server.grpc_url).synthesize("hello", model="no-such-voice"),
        lambda: arun(async_speech()),
        lambda: GenerationClient(server.grpc_url).generate("hello", model="no-such-model"),
        lambda: arun(async_stream()),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(TritonizeError, match="no-such-") as e:
            call()
        assert e.value.status == "NOT_FOUND", (i, e.value.status, str(e.value))


@pytest.mark.unit
def test_a_refused_connection_is_unavailable_naming_the_address():
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    calls = [
        lambda: Client(url, "http").embed(["x"], model=EMBEDDER),
        lambda: SpeechClient(url, "http").synthesize("hi", model=VOICE),
        lambda: Client(url, "grpc", timeout_s=5).embed(["x"], model=EMBEDDER),
        lambda: GenerationClient(url, timeout_s=5).generate("hi", model=GPT2),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(TritonizeError) as e:
            call()
        assert e.value.status == "UNAVAILABLE", (i, str(e.value))
        assert "refused" in str(e.value).lower()
    assert "cannot reach the server at " + url in str(pytest.raises(TritonizeError, calls[0]).value)
    assert Client(url, "http").is_ready() is False


# -- statuses of errors the server gives, streams included -------------------------------------------
@pytest.mark.usefixtures("ready_after")
def test_bad_generation_parameters_are_invalid_arg_streamed_or_not(server):
    gen = GenerationClient(server.grpc_url)
    for call in (lambda: gen.generate("the", model=GPT2, temperature=-1), lambda: list(gen.stream("the", model=GPT2, top_p=5.0))):
        with pytest.raises(TritonizeError, match="temperature must be >= 0|top_p must be in") as e:
            call()
        assert e.value.status == "INVALID_ARG"

    async def async_stream():
        async with AsyncGenerationClient(server.grpc_url) as c:
            return [p async for p in c.stream("the", model=GPT2, max_new_tokens=0)]

    with pytest.raises(TritonizeError, match="max_new_tokens must be between 1 and") as e:
        arun(async_stream())
    assert e.value.status == "INVALID_ARG"


@pytest.mark.usefixtures("ready_after")
def test_overload_is_unavailable_so_it_can_be_told_from_bad_input(server):
    async def burst():
        async with AsyncGenerationClient(server.grpc_url) as c:
            calls = [c.generate_chunk("the quick brown fox", model=GPT2_LIMITS, max_new_tokens=400, repetition_penalty=1.3)
                     for _ in range(6)]
            return await asyncio.gather(*calls, return_exceptions=True)

    errors = [r for r in arun(burst()) if isinstance(r, Exception)]
    assert errors, "one slot and a queue of one took a burst of six"
    for e in errors:
        assert isinstance(e, TritonizeError) and e.status == "UNAVAILABLE" and "overloaded" in str(e)


@pytest.mark.usefixtures("ready_after")
def test_bad_input_status_is_the_same_over_grpc_and_http(server):
    for client in (Client(server.grpc_url), Client(server.http_url, "http")):
        with client, pytest.raises(TritonizeError, match=r"TEXT\[0\] is not valid UTF-8") as e:
            client.embed([b"bad\xff"], model=EMBEDDER)
        assert e.value.status == "INVALID_ARG"


# -- what the client refuses before sending ------------------------------------------------------------
def test_seed_past_int64_is_refused_by_name_before_sending(server):
    async def async_speech():
        async with AsyncSpeechClient(server.grpc_url) as c:
            return await c.synthesize("hi", model=VOICE, seed=BIG_SEED)

    calls = [
        lambda: GenerationClient(server.grpc_url).generate("hi", model=GPT2, seed=BIG_SEED),
        lambda: list(GenerationClient(server.grpc_url).stream("hi", model=GPT2, seed=BIG_SEED)),
        lambda: SpeechClient(server.grpc_url).synthesize("hi", model=VOICE, seed=BIG_SEED),
        lambda: list(SpeechClient(server.grpc_url).stream("hi", model=VOICE, seed=-1)),
        lambda: arun(async_speech()),
        lambda: GenerationClient(server.grpc_url).generate("hi", model=GPT2, seed="7"),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(TritonizeError, match=r"^seed must be (in|an integer in) \[0, 2\*\*63 - 1\]") as e:
            call()
        assert e.value.status == "INVALID_ARG", i
    assert GenerationClient(server.grpc_url).generate_chunk("hi", model=GPT2, seed=2**63 - 1, max_new_tokens=2).token_ids


def test_other_bad_arguments_are_tritonize_errors_too(server):
    with pytest.raises(TritonizeError, match=r"parameters \['pitch'\] are unknown synthesis parameter"):
        SpeechClient(server.grpc_url).synthesize("hi", model=VOICE, pitch=2)
    with pytest.raises(TritonizeError, match="speaking_rate must be a finite number, got nan"):
        SpeechClient(server.grpc_url).synthesize("hi", model=VOICE, speaking_rate=float("nan"))
    with pytest.raises(TritonizeError, match=r"max_new_tokens must fit in int64"):
        GenerationClient(server.grpc_url).generate("hi", model=GPT2, max_new_tokens=2**70)
    with pytest.raises(TritonizeError, match=r"texts\[1\] must be str or bytes, not int"):
        Client(server.grpc_url).embed(["ok", 3], model=EMBEDDER)
    with pytest.raises(TritonizeError, match="protocol must be one of"):
        Client(server.grpc_url, "smoke-signals")
    # A str that is not UTF-8 (a lone surrogate, as JSON's "\\ud800" decodes) is refused by name, before sending.
    lone = "bad \ud800 text"
    for call, field in ((lambda: Client(server.grpc_url).embed(["ok", lone], model=EMBEDDER), r"texts\[1\]"),
                        (lambda: GenerationClient(server.grpc_url).generate(lone, model=GPT2), "prompt"),
                        (lambda: SpeechClient(server.grpc_url).synthesize(lone, model=VOICE), "text"),
                        (lambda: ChatClient(server.grpc_url).ask(lone, model=CHATBOT), "text"),
                        (lambda: ChatClient(server.grpc_url).ask("hi", model=CHATBOT, history=[("user", lone)]), "history"),
                        (lambda: ChatClient(server.grpc_url).ask("hi", model=CHATBOT, history=["user"]), r"history\[0\] must be"),
                        (lambda: ChatClient(server.grpc_url).ask(3, model=CHATBOT), "text must be str, not int")):
        with pytest.raises(TritonizeError, match=field) as e:
            call()
        assert e.value.status == "INVALID_ARG"


# -- the command line: one line, no traceback -----------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["infer", "gpt2", "hi", "--model", GPT2, "--seed", str(BIG_SEED)], r"seed must be in [0, 2**63 - 1]"),
    (["infer", "tts", VOICE, "hi", "--seed", str(BIG_SEED)], r"seed must be in [0, 2**63 - 1]"),
    (["infer", "tts", VOICE, "hi", "--speaking-rate", "0"], "SPEAKING_RATE must be in (0, 10], got 0"),
    (["infer", "tts", VOICE, "hi", "--speaking-rate", "0", "--stream"], "SPEAKING_RATE must be in (0, 10], got 0"),
    (["infer", "embed", EMBEDDER, "hi", "--protocol", "http", "--url", "127.0.0.1:{closed}"], "cannot reach the server at"),
])
def test_cli_prints_one_line_errors(server, tmp_path, args, message):
    url = server.grpc_url if "--url" not in args else None
    args = [a.format(closed=free_port()) for a in args] + (["--url", url] if url else [])
    if args[1] == "tts":
        args += ["--out", str(tmp_path / "x.wav")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x.wav").exists()


# -- one client, many threads (item 12) -------------------------------------------------------------------
THREADED = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from tritonize.client import Client, SpeechClient

http, model, voice = sys.argv[1:4]
with Client(http, "http", timeout_s=30) as c:
    solo = {i: c.embed([f"text number {i}"], model=model) for i in range(5)}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: c.embed([f"text number {i % 5}"], model=model), range(160)))
embeds_ok = all(np.abs(r - solo[i % 5]).max() < 1e-5 for i, r in enumerate(results))
with SpeechClient(http, "http", timeout_s=60) as s:
    solo = [s.synthesize("hello there", model=voice, seed=i).samples for i in range(3)]
    with ThreadPoolExecutor(4) as pool:
        audio = list(pool.map(lambda i: s.synthesize("hello there", model=voice, seed=i % 3).samples, range(12)))
speech_ok = all(a.shape == solo[i % 3].shape and np.abs(a.astype(int) - solo[i % 3]).max() <= 2 for i, a in enumerate(audio))
print(json.dumps({"embeds": len(results), "embeds_ok": bool(embeds_ok), "speech": len(audio), "speech_ok": bool(speech_ok)}))
"""


def test_one_http_client_is_safe_to_share_across_a_thread_pool(server):
    # In a child process: a client that is not thread-safe hangs rather than fails, and a hung pool
    # thread would keep pytest from ever exiting.
    r = subprocess.run([sys.executable, "-c", THREADED, server.http_url, EMBEDDER, VOICE], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"embeds": 160, "embeds_ok": True, "speech": 12, "speech_ok": True}


# -- speech downloads only what it uses (item 14) --------------------------------------------------------
def test_speech_client_downloads_audio_and_rate_not_the_wav_copy(server):
    with SpeechClient(server.grpc_url) as speech:
        transport = speech._clients.get()
        received = []
        real_infer = transport.infer

        def spy(*args, **kwargs):  # records what came back from the real server
            result = real_infer(*args, **kwargs)
            received.append(sorted(o.name for o in result.get_response().outputs))
            return result

        transport.infer = spy
        audio = speech.synthesize("hello world", model=VOICE, seed=1)
    assert received == [["AUDIO", "SAMPLE_RATE"]]
    assert audio.rate == 8000 and len(audio.samples) > 0
    # WAV is still built here, byte for byte what the server's WAV output holds.
    import io
    import wave

    import tritonclient.grpc as grpcclient

    from tritonize.client.speech import _inputs

    buf = io.BytesIO()
    audio.to_wav(buf)
    served = grpcclient.InferenceServerClient(server.grpc_url).infer(
        VOICE, _inputs(grpcclient, "hello world", {**speech.defaults(VOICE), "seed": 1}))
    assert buf.getvalue() == served.as_numpy("WAV")[0][0]
    with wave.open(io.BytesIO(buf.getvalue())) as w:
        assert w.getframerate() == 8000 and w.getnframes() == len(audio.samples)
