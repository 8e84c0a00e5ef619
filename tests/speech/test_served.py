"""A tiny random VITS voice served as a Triton speech pipeline, against VitsModel in PyTorch."""

import asyncio
import time
import wave

import numpy as np
import pytest

from tritonize.client import AsyncSpeechClient, SpeechClient, TritonizeError
from tests.conftest import VOICE
from tests.torch_models import VOICE_TORCH

BOTH = pytest.mark.parametrize("voice", [VOICE, VOICE_TORCH])  # ONNX Runtime and PyTorch engines

PCM_TOLERANCE = 2  # int16 steps: the served audio is PyTorch's waveform (error ~2e-5) rounded to 16 bits
FIXED = {"noise_scale": 0.667, "noise_scale_duration": 0.8, "speaking_rate": 1.0, "seed": 11}


@pytest.fixture(scope="module")
def speech(server):
    with SpeechClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def reference(built):
    """VitsModel's own forward in PyTorch (one sentence, the same seeded noise), as 16-bit PCM."""
    from transformers import AutoTokenizer, VitsModel

    from tritonize.converters.speech.vits import torch_waveform
    from tritonize.runtime.speech.audio import to_pcm16

    model = VitsModel.from_pretrained(built["tiny_vits"]).eval()
    tok = AutoTokenizer.from_pretrained(built["tiny_vits"])

    def pcm(sentence: str, sentence_index: int = 0, **params) -> np.ndarray:
        p = {**FIXED, **params}
        ids = tok(sentence)["input_ids"]
        wave_ = torch_waveform(model, ids, p["seed"] + sentence_index, p["noise_scale"], p["noise_scale_duration"], p["speaking_rate"])
        return to_pcm16(wave_)

    return pcm


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()) <= PCM_TOLERANCE


@BOTH
def test_served_audio_equals_pytorch_for_the_same_noise(speech, reference, voice):
    for text in ("hello world", "the quick brown fox jumps over the lazy dog"):
        audio = speech.synthesize(text, model=voice, **FIXED)
        assert audio.rate == 8000 and audio.samples.dtype == np.int16
        assert close(audio.samples, reference(text))
    other_seed = speech.synthesize("hello world", model=voice, **{**FIXED, "seed": 12})
    assert not close(other_seed.samples, reference("hello world"))  # the seed is really used


@BOTH
def test_sentences_are_normalised_split_and_joined_with_a_pause(speech, reference, voice):
    audio = speech.synthesize("Dr. Smith has 3 cats. They sleep!", model=voice, **FIXED)
    first, second = reference("doctor smith has three cats", 0), reference("they sleep", 1)
    pause = np.zeros(int(8000 * 0.12), np.int16)
    assert close(audio.samples, np.concatenate([first, pause, second]))


def test_wav_files_open_at_the_right_rate_and_length(speech, server, tmp_path):
    audio = speech.synthesize("hello world", model=VOICE, **FIXED)
    path = audio.to_wav(tmp_path / "hello.wav")
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (8000, 1, 2, len(audio.samples))
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), audio.samples)
    import tritonclient.grpc as grpcclient  # the server's own WAV output, for callers without our client

    from tritonize.client.speech import _inputs

    result = grpcclient.InferenceServerClient(server.grpc_url).infer(VOICE, _inputs(grpcclient, "hello world", FIXED))
    (tmp_path / "server.wav").write_bytes(result.as_numpy("WAV")[0][0])
    with wave.open(str(tmp_path / "server.wav")) as w:
        assert w.getframerate() == 8000 and w.getnframes() == len(audio.samples)


def test_longer_text_longer_audio_and_faster_rate_shorter_audio(speech):
    steady = {**FIXED, "noise_scale_duration": 0.0}
    one = len(speech.synthesize("hello world", model=VOICE, **steady).samples)
    four = len(speech.synthesize("hello world hello world hello world hello world", model=VOICE, **steady).samples)
    assert 3.0 < four / one < 5.0
    fast = len(speech.synthesize("hello world", model=VOICE, **{**steady, "speaking_rate": 2.0}).samples)
    assert fast < 0.7 * one


@BOTH
def test_concurrent_requests_of_different_lengths_each_get_their_own_audio(server, speech, raw_grpc, voice):
    texts = ["hi", "hello world", "the quick brown fox", "a much longer sentence than the others in this batch", "ok",
             "speech from triton", "dogs and cats", "the lazy dog sleeps all day long in the sun"]
    solo = [speech.synthesize(t, model=voice, **{**FIXED, "seed": i}).samples for i, t in enumerate(texts)]
    step = f"{voice}_model"
    before = raw_grpc.get_inference_statistics(model_name=step, as_json=True)["model_stats"][0]

    async def run():
        async with AsyncSpeechClient(server.grpc_url) as c:
            return await asyncio.gather(*(c.synthesize(t, model=voice, **{**FIXED, "seed": i % len(texts)}) for i, t in enumerate(texts * 3)))

    together = asyncio.run(run())
    after = raw_grpc.get_inference_statistics(model_name=step, as_json=True)["model_stats"][0]
    for i, audio in enumerate(together):
        assert close(audio.samples, solo[i % len(texts)]), f"request {i} differs from its solo audio"
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert executions < len(together), "requests were not batched"


@BOTH
def test_streaming_gives_the_one_shot_audio_sentence_by_sentence(speech, voice):
    text = "The first sentence is short. The second one is a little longer than that. Third. Fourth comes now. And the fifth ends it."
    one_shot = speech.synthesize(text, model=voice, **FIXED).samples
    arrivals, parts = [], []
    start = time.perf_counter()
    for audio in speech.stream(text, model=voice, **FIXED):
        arrivals.append(time.perf_counter() - start)
        parts.append(audio.samples)
    assert len(parts) == 5
    assert close(np.concatenate(parts), one_shot)
    assert arrivals[0] < arrivals[-1]  # the first sentence was out before the last was synthesised


@pytest.mark.parametrize("text, message", [
    ("", "TEXT is empty"),
    ("?!... --- ,;", "no characters this voice can speak"),
    ("日本語のテキスト", "no characters this voice can speak"),
])
@BOTH
def test_unspeakable_text_is_a_clear_error(speech, server, text, message, voice):
    with pytest.raises(TritonizeError, match=message):
        speech.synthesize(text, model=voice)
    assert server.is_ready()


@pytest.mark.parametrize("params, message", [
    ({"speaking_rate": 0.0}, r"SPEAKING_RATE must be in \(0, 10\], got 0"),
    ({"speaking_rate": -1.0}, r"SPEAKING_RATE must be in \(0, 10\], got -1"),
    ({"noise_scale": -0.5}, r"NOISE_SCALE must be in \[0, 5\]"),
])
@BOTH
def test_bad_parameters_name_the_field_and_range(speech, params, message, voice):
    with pytest.raises(TritonizeError, match=message):
        speech.synthesize("hello", model=voice, **params)
    with pytest.raises(TritonizeError, match="unknown synthesis parameter"):
        speech.synthesize("hello", model=voice, pitch=2)
    assert len(speech.synthesize("hello", model=voice).samples) > 0  # the server is still serving


LONG_SENTENCE = "The server splits long texts into sentences and synthesises them in batches. "


def long_text(chars: int) -> str:
    return (LONG_SENTENCE * (chars // len(LONG_SENTENCE) + 1))[:chars]


def test_twenty_five_thousand_characters_are_split_not_a_crash(speech):
    audio = speech.synthesize(long_text(25_000), model=VOICE, seed=3)  # ~8 minutes of the tiny voice: within its limit
    short = speech.synthesize(LONG_SENTENCE, model=VOICE, seed=3)
    assert audio.seconds > 100 * short.seconds


# -- the limit on the audio's duration ---------------------------------------------------------------
def tokens_computed(server, previous: float = -1.0) -> float:
    """The model step's tritonize_tokens_computed_total, once it differs from `previous` and has settled:
    a request's updates land in several metric flushes, so a first changed value may be partial."""
    import re
    import urllib.request

    from tritonize.runtime.triton import METRICS_SETTLE_S

    def read() -> float:
        text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
        m = re.search(rf'^tritonize_tokens_computed_total{{model="{VOICE}_model"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    deadline = time.monotonic() + 10
    value = read()
    while time.monotonic() < deadline:
        time.sleep(METRICS_SETTLE_S)
        settled, value = value, read()
        if value != previous and value == settled:
            break
    return value


@pytest.mark.usefixtures("still_serving")
def test_text_past_the_voices_audio_limit_is_refused_naming_it(server, speech):
    """50,000 characters make ~16 minutes of the tiny voice, past its default max_audio_seconds (600);
    25,000 make ~8 and pass. Synthesis stops at the limit: the refused text costs less than twice the
    passing one (all of it would cost twice)."""
    before = tokens_computed(server)
    speech.synthesize(long_text(25_000), model=VOICE, seed=3)
    half_cost = tokens_computed(server, before) - before
    before += half_cost
    with pytest.raises(TritonizeError, match=r"TEXT makes more audio than this voice's max_audio_seconds=600 s per request") as e:
        speech.synthesize(long_text(50_000), model=VOICE, seed=3)
    assert e.value.status == "INVALID_ARG"
    assert tokens_computed(server, before) - before < 1.6 * half_cost
    with pytest.raises(TritonizeError, match=r"the request's MAX_AUDIO_SECONDS=5 s"):
        speech.synthesize(long_text(50_000), model=VOICE, seed=3, max_audio_seconds=5)


@pytest.mark.usefixtures("still_serving")
def test_a_request_may_lower_the_limit_but_not_raise_it(speech):
    text = "hello world. " * 8
    full = speech.synthesize(text, model=VOICE, **FIXED)
    assert speech.synthesize(text, model=VOICE, **FIXED, max_audio_seconds=full.seconds + 0.01).samples.shape == full.samples.shape
    half = round(full.seconds / 2, 2)
    with pytest.raises(TritonizeError, match=rf"the request's MAX_AUDIO_SECONDS={half:g} s"):
        speech.synthesize(text, model=VOICE, **FIXED, max_audio_seconds=half)
    for bad in (0.0, -1.0, 601.0):
        with pytest.raises(TritonizeError, match=rf"MAX_AUDIO_SECONDS must be in \(0, 600\] seconds .*got {bad:g}"):
            speech.synthesize(text, model=VOICE, **FIXED, max_audio_seconds=bad)


@pytest.mark.usefixtures("still_serving")
def test_streams_stop_at_the_limit_with_the_same_error(server, speech):
    text = "hello world. " * 8
    full = speech.synthesize(text, model=VOICE, **FIXED)
    limit = round(full.seconds / 2, 2)
    parts = []
    with pytest.raises(TritonizeError, match=rf"the request's MAX_AUDIO_SECONDS={limit:g} s") as e:
        for audio in speech.stream(text, model=VOICE, **FIXED, max_audio_seconds=limit):
            parts.append(audio)
    assert e.value.status == "INVALID_ARG"
    assert 1 <= len(parts) < 8 and sum(p.seconds for p in parts) <= limit  # what fits came first

    async def run():
        async with AsyncSpeechClient(server.grpc_url) as c:
            return [a async for a in c.stream(text, model=VOICE, **FIXED, max_audio_seconds=limit)]

    with pytest.raises(TritonizeError, match="MAX_AUDIO_SECONDS"):
        asyncio.run(run())


def test_long_texts_within_the_limit_still_stream(speech):
    text = LONG_SENTENCE * 40
    parts = list(speech.stream(text, model=VOICE, seed=3, max_audio_seconds=600))
    assert len(parts) == 40 and close(np.concatenate([p.samples for p in parts]),
                                                    speech.synthesize(text, model=VOICE, seed=3).samples)


def test_cli_writes_a_wav(server, tmp_path):
    from typer.testing import CliRunner

    from tritonize.cli import app

    out = tmp_path / "cli.wav"
    r = CliRunner().invoke(app, ["infer", "tts", VOICE, "Hello there. General greeting.", "--out", str(out), "--stream", "--url", server.grpc_url])
    assert r.exit_code == 0, r.output
    assert "sentence 2" in r.output
    with wave.open(str(out)) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 0


def test_async_stream_gives_the_same_sentences(server, speech):
    text = "One sentence here. And a second one."

    async def run():
        async with AsyncSpeechClient(server.grpc_url) as c:
            return [a.samples async for a in c.stream(text, model=VOICE, **FIXED)]

    parts = asyncio.run(run())
    assert len(parts) == 2
    assert all(close(a, b.samples) for a, b in zip(parts, speech.stream(text, model=VOICE, **FIXED)))


def test_onnx_voice_runs_rows_one_by_one_and_the_torch_voice_batches_them(built):
    """ONNX Runtime on CPU: a batch of sentences measured slower than the same sentences one at a time,
    so its model step runs rows singly; the PyTorch engine (a GPU's) keeps max_batch_size rows a run."""
    from tritonize.converters.repository import read_config

    onnx_step = read_config(built["repository"] / f"{VOICE}_model" / "config.pbtxt")
    torch_step = read_config(built["repository"] / f"{VOICE_TORCH}_model" / "config.pbtxt")
    assert onnx_step.parameters["max_rows_per_run"].string_value == "1" and onnx_step.max_batch_size > 1
    assert torch_step.parameters["max_rows_per_run"].string_value == str(torch_step.max_batch_size) != "1"
