"""Generator checkpoints and workloads the benchmarks share (no rich, no plotting: the GPU check imports
this on a machine with only the serving stack): GPT-2 small and T5-small architectures with random
weights (speed does not depend on the weights), the prompts, and a served streaming load."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

TEXT = (
    "Serving text generation well means keeping the key value cache, streaming every token as soon as it "
    "exists, and batching the steps of many concurrent requests together so the matrix multiplications see "
    "more than one row at a time. A request that arrives while others are running should join the batch at "
    "the next step instead of waiting for the whole batch to finish, and a finished request should leave."
)


def prompts(n: int = 16) -> list[str]:
    words = TEXT.split()
    return [" ".join(words[i % 20 : i % 20 + 4 + (i * 7) % 30]) for i in range(n)]


def build_gpt2_small(path: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from tritonize.converters.generation.tiny import train_byte_level_bpe

    if (path / "config.json").exists():
        return path
    end = "<|endoftext|>"
    tok = GPT2TokenizerFast(tokenizer_object=train_byte_level_bpe(1000), eos_token=end, bos_token=end, unk_token=end)
    config = GPT2Config(eos_token_id=None, bos_token_id=None)  # GPT-2 small: 12 layers, 768 wide, 50257 tokens
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_t5_small(path: Path) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

    from tritonize.converters.generation.tiny import train_unigram

    if (path / "config.json").exists():
        return path
    tok = T5TokenizerFast(tokenizer_object=train_unigram(200), eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                          extra_ids=0, model_max_length=512)
    config = T5Config(eos_token_id=None, decoder_start_token_id=0, pad_token_id=0)  # t5-small: 6+6 layers, 512 wide
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


async def _streams(url: str, model: str, texts: list[str], concurrency: int, per_stream: int, new_tokens: int, stagger_s: float) -> dict:
    from tritonize.client import AsyncGenerationClient

    ttfts: list[float] = []
    tokens, errors = 0, 0

    async def stream(c, user: int) -> None:
        nonlocal tokens, errors
        await asyncio.sleep(user * stagger_s)
        for r in range(per_stream):
            prompt, sent, first = texts[(user * per_stream + r) % len(texts)], time.perf_counter(), None
            try:
                async for chunk in c.stream_chunks(prompt, model=model, max_new_tokens=new_tokens):
                    if chunk.token_ids and first is None:
                        first = time.perf_counter()
                        ttfts.append(first - sent)
                    tokens += len(chunk.token_ids)
            except Exception:
                errors += 1

    async with AsyncGenerationClient(url) as c:
        await c.generate(texts[0], model=model, max_new_tokens=2)  # warm
        start = time.perf_counter()
        await asyncio.gather(*(stream(c, u) for u in range(concurrency)))
        seconds = time.perf_counter() - start
    ttfts.sort()
    return {"system": "served", "setting": f"{concurrency} streams", "tokens_per_s": tokens / seconds,
            "ttft_p50_ms": statistics.median(ttfts) * 1e3 if ttfts else float("nan"),
            "ttft_p90_ms": ttfts[int(0.9 * (len(ttfts) - 1))] * 1e3 if ttfts else float("nan"), "requests": len(ttfts), "errors": errors}


def stream_load(url: str, model: str, texts: list[str], concurrency: int, per_stream: int, new_tokens: int, stagger_s: float = 0.002) -> dict:
    """`concurrency` streams arriving `stagger_s` apart, each running `per_stream` requests back to back:
    tokens/s over the whole window, time to first token per request."""
    return asyncio.run(_streams(url, model, texts, concurrency, per_stream, new_tokens, stagger_s))
