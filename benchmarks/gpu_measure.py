"""The measurements of benchmarks/gpu_check.py, one function each: in-process engine throughput, dtype
parity of the PyTorch engines against float32 PyTorch on CPU, Hugging Face `generate` baselines, and
served load (encoder requests, GPT-2 streams, VITS syntheses) through the real Triton server.

Every timing runs the code the server runs (the runtime's engines) or a real client against it; GPU
work is synchronised before a clock stops (the engines return host arrays, which synchronises).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- in process ---------------------------------------------------------------------------------------
def engine_throughput(engine, seq_len: int, batch_sizes: list[int], seconds: float, vocab: tuple[int, int]) -> list[dict]:
    """Rows/s of the encoder engine on [batch, seq_len] inputs (the served step's engine call)."""
    rng = np.random.default_rng(0)
    rows = []
    for b in batch_sizes:
        ids = rng.integers(*vocab, (b, seq_len)).astype(np.int64)
        mask = np.ones_like(ids)
        for _ in range(3):
            engine.run(ids, mask)  # warm (allocator, kernels)
        calls, latencies, start = 0, [], time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 3:
            t = time.perf_counter()
            engine.run(ids, mask)
            latencies.append(time.perf_counter() - t)
            calls += 1
        elapsed = time.perf_counter() - start
        rows.append({"batch": b, "rows_per_s": b * calls / elapsed, "p50_ms": percentile(latencies, 50) * 1e3})
    return rows


def device_memory(device: str) -> dict:
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return {"note": "no CUDA device: memory not measured"}
    free, total = torch.cuda.mem_get_info()
    return {"peak_allocated_this_process_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device_in_use_gib": (total - free) / 2**30, "device_total_gib": total / 2**30}


def greedy_ids(model, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens from a runtime generation model (prefill, then one-row decodes)."""
    logits, slot = model.prefill(prompt)
    slots, ids = {0: slot}, [int(logits.argmax())]
    for _ in range(n - 1):
        ids.append(int(model.decode([0], slots, [ids[-1]])[0].argmax()))
    model.forget()
    return ids


def first_divergence(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def parity(folders: dict[str, Path], checkpoints: dict[str, Path], device: str, dtypes: list[str], texts: list[str]) -> list[dict]:
    """The PyTorch engines on `device` in each dtype against float32 PyTorch on CPU (issue 9, item 3):
    float32 within the CPU tolerances; float16/bfloat16: embedding cosine >= 0.999, classification argmax
    identical, greedy ids identical for 16 tokens (else the first divergence), waveform error reported."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

    from tritonize.converters.speech.vits import torch_waveform
    from tritonize.runtime.encoders.encoder import load_engine as encoder_engine
    from tritonize.runtime.engines import EngineSpec
    from tritonize.runtime.generation.engine_torch import TorchCausalLM, TorchSeq2SeqLM
    from tritonize.runtime.pooling import l2_normalize, mean_pool
    from tritonize.runtime.speech.engine_torch import TorchVitsEngine
    from tritonize.runtime.speech.voice import Voice

    rows = []
    tok = AutoTokenizer.from_pretrained(checkpoints["embedder"])
    enc = tok(texts, padding=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(checkpoints["embedder"]).eval()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
        ctok = AutoTokenizer.from_pretrained(checkpoints["classifier"])
        cenc = ctok(texts, padding=True, return_tensors="np")
        cids, cmask = cenc["input_ids"].astype(np.int64), cenc["attention_mask"].astype(np.int64)
        logits = AutoModelForSequenceClassification.from_pretrained(checkpoints["classifier"]).eval()(
            input_ids=torch.from_numpy(cids), attention_mask=torch.from_numpy(cmask)).logits.numpy()
    ref_emb = l2_normalize(mean_pool(hidden, mask))
    prompts = {}
    refs = {}
    for family, cls in (("gpt2", AutoModelForCausalLM), ("t5", AutoModelForSeq2SeqLM)):
        gtok, gm = AutoTokenizer.from_pretrained(checkpoints[family]), cls.from_pretrained(checkpoints[family]).eval()
        prompts[family] = [gtok(t).input_ids for t in texts[:3]]
        with torch.inference_mode():
            outs = [gm.generate(torch.tensor([p]), do_sample=False, max_new_tokens=16, min_new_tokens=16, pad_token_id=gm.config.pad_token_id or 0)[0].tolist()
                    for p in prompts[family]]
        refs[family] = [o[1:] if family == "t5" else o[len(p):] for o, p in zip(outs, prompts[family])]
    vtok = AutoTokenizer.from_pretrained(checkpoints["voice"])
    from transformers import VitsModel

    vits = VitsModel.from_pretrained(checkpoints["voice"]).eval()
    vids = vtok("hello world from triton")["input_ids"]
    ref_wave = torch_waveform(vits, vids, 5, 0.667, 0.8, 1.0)

    for dtype in dtypes:
        spec = EngineSpec("torch", device, dtype, 0)
        e = encoder_engine(folders["embedder"], "last_hidden_state", spec).run(ids, mask)
        cos = float((l2_normalize(mean_pool(e, mask)) * ref_emb).sum(-1).min())
        err = float(np.abs(e - hidden)[mask.astype(bool)].max())
        ok = err <= 1e-4 if dtype == "float32" else cos >= 0.999
        rows.append({"check": "encoder embedding", "dtype": dtype, "value": f"max abs {err:.2e}, min cosine {cos:.5f}",
                     "tolerance": "max abs <= 1e-4" if dtype == "float32" else "cosine >= 0.999", "ok": ok})
        c = encoder_engine(folders["classifier"], "logits", spec).run(cids, cmask)
        same = bool((c.argmax(-1) == logits.argmax(-1)).all())
        err = float(np.abs(c - logits).max())
        rows.append({"check": "encoder classification", "dtype": dtype, "value": f"max abs {err:.2e}, argmax identical: {same}",
                     "tolerance": "max abs <= 1e-4" if dtype == "float32" else "argmax identical", "ok": same and (dtype != "float32" or err <= 1e-4)})
        for family in ("gpt2", "t5"):
            m = TorchCausalLM(folders[family], spec) if family == "gpt2" else TorchSeq2SeqLM(folders[family], spec, _start(checkpoints[family]))
            got = [greedy_ids(m, p, 16) for p in prompts[family]]
            div = [first_divergence(g, r) for g, r in zip(got, refs[family])]
            rows.append({"check": f"{family} greedy ids (16 tokens, {len(got)} prompts)", "dtype": dtype,
                         "value": "identical" if all(d is None for d in div) else f"first divergence at token {div}",
                         "tolerance": "identical", "ok": all(d is None for d in div)})
            del m
        v = TorchVitsEngine(folders["voice"], spec, min_tokens=int(getattr(vits.config, "window_size", 0) or 0) + 2)
        (w,) = v.run([np.array(vids)], [Voice(1.0, 0.667, 0.8, 5)], [5])
        same_length = len(w) == len(ref_wave)  # reduced precision may round a duration to another frame count
        err = float(np.abs(w - ref_wave).max()) if same_length else float("inf")
        value = f"max abs {err:.2e}" if same_length else f"length {len(w)} vs {len(ref_wave)} samples"
        rows.append({"check": "vits waveform", "dtype": dtype, "value": value,
                     "tolerance": "max abs <= 1e-3" if dtype == "float32" else "reported", "ok": err <= 1e-3 if dtype == "float32" else True})
        del v
        _free()
    return rows


def _start(checkpoint: Path) -> int:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(checkpoint)
    return c.decoder_start_token_id if c.decoder_start_token_id is not None else c.pad_token_id


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def hf_generate(checkpoint: Path, prompts: list[str], new_tokens: int, device: str, dtype: str, one_at_a_time: int, batch: int) -> list[dict]:
    """Hugging Face `generate` (greedy, fixed length) one request at a time and as one static batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tritonize.runtime.engine_torch import DTYPES

    model = AutoModelForCausalLM.from_pretrained(checkpoint).to(device=device, dtype=DTYPES[dtype]).eval()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    tok.padding_side, tok.pad_token = "left", tok.pad_token or tok.eos_token
    kw = dict(do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)

    def run(texts: list[str], n: int) -> float:
        enc = tok(texts, return_tensors="pt", padding=True).to(device)
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run(prompts[:1], 2)
    first = [run([p], 1) for p in prompts[:one_at_a_time]]
    solo = [run([p], new_tokens) for p in prompts[:one_at_a_time]]
    texts = [prompts[i % len(prompts)] for i in range(batch)]
    static = run(texts, new_tokens)
    del model
    _free()
    return [
        {"system": "HF generate", "setting": "one at a time", "tokens_per_s": new_tokens * len(solo) / sum(solo),
         "ttft_p50_ms": statistics.median(first) * 1e3, "requests": len(solo)},
        {"system": "HF generate", "setting": f"static batch {batch}", "tokens_per_s": new_tokens * batch / static,
         "ttft_p50_ms": static * 1e3, "requests": batch},
    ]


# -- served ---------------------------------------------------------------------------------------------
async def _encoder_load(url: str, model: str, texts: list[str], concurrency: int, seconds: float) -> tuple[list[float], float, int]:
    import tritonclient.grpc.aio as aio
    from tritonclient.grpc import InferInput, InferRequestedOutput

    client = aio.InferenceServerClient(url)
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))

    async def worker(deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            inp = InferInput("TEXT", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[texts[next(counter) % len(texts)].encode()]], dtype=object))
            t = time.perf_counter()
            try:
                await client.infer(model, [inp], outputs=[InferRequestedOutput("EMBEDDING")])
                latencies.append(time.perf_counter() - t)
            except Exception:
                errors += 1

    await asyncio.gather(*(worker(time.perf_counter() + min(1.0, seconds)) for _ in range(concurrency)))  # warm
    latencies.clear()
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return latencies, elapsed, errors


def encoder_served(url: str, http_url: str, model: str, label: str, texts: list[str], concurrency: list[int], seconds: float) -> list[dict]:
    from tritonize.planner.triton_stats import snapshot, window

    rows = []
    for c in concurrency:
        before = snapshot(http_url)
        latencies, elapsed, errors = asyncio.run(_encoder_load(url, model, texts, c, seconds))
        step = window(before, snapshot(http_url)).get(f"{model}_model", {})
        rows.append({"batching": label, "concurrency": c, "requests_per_s": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1e3,
                     "p99_ms": percentile(latencies, 99) * 1e3, "errors": errors, "model_step_avg_batch": step.get("avg_batch", 0.0)})
    return rows


async def _speech_load(url: str, model: str, text: str, concurrency: int, per_client: int, rate: int) -> tuple[float, float, int]:
    from tritonize.client import AsyncSpeechClient

    audio_s, errors = 0.0, 0

    async def client(c, k: int) -> None:
        nonlocal audio_s, errors
        for r in range(per_client):
            try:
                a = await c.synthesize(text, model=model, seed=k * per_client + r)
                audio_s += len(a.samples) / rate
            except Exception:
                errors += 1

    async with AsyncSpeechClient(url) as c:
        await c.synthesize(text, model=model, seed=0)  # warm
        start = time.perf_counter()
        await asyncio.gather(*(client(c, k) for k in range(concurrency)))
        return time.perf_counter() - start, audio_s, errors


def speech_served(url: str, model: str, text: str, rate: int, settings: list[tuple[int, int]]) -> list[dict]:
    """Real-time factor (wall seconds per second of audio) at each (concurrency, requests per client)."""
    rows = []
    for concurrency, per_client in settings:
        wall, audio_s, errors = asyncio.run(_speech_load(url, model, text, concurrency, per_client, rate))
        rows.append({"concurrency": concurrency, "requests": concurrency * per_client, "audio_s": audio_s, "wall_s": wall,
                     "rtf": wall / audio_s if audio_s else float("nan"), "errors": errors})
    return rows
