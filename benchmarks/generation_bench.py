"""Generation benchmark: served (KV cache, continuous batching, streaming) vs Hugging Face `generate`
in PyTorch, one request at a time and as a static batch, in one run.

    .venv/bin/python -m benchmarks.generation_bench [--models gpt2 t5] [--threads 2] [--new-tokens 32]
        [--no-prefill-baseline]

GPT-2 small and T5-small architectures with random weights (nothing downloads; speed does not depend
on the weights) and byte-level BPE / unigram tokenizers trained locally. Greedy, a fixed number of new
tokens (no eos), prompts of 5-40 tokens. Served: the asyncio client, N concurrent streams whose first
requests start at staggered times, each running requests back to back. Unless --no-prefill-baseline,
each model is also served a second time with batched prefill off (`max_prefill_tokens=1`: one forward
per joining prompt, as before issue 12), side by side in the same server. Prints a table and the
issue's targets (met/missed); writes bench_results/generation_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tritonize.server.memory import reexec_with_huge_pages
from benchmarks.generation_models import build_gpt2_small, build_t5_small, prompts  # noqa: F401

CACHE = Path.home() / ".cache" / "tritonize" / "generation-bench"
console = Console(width=200)  # the table stays whole in a log
SOLO_PREFILL = "-solo-prefill"  # served name suffix of the copy with batched prefill off
SOLO_SYSTEM = "served, prefill one by one"
TOKENS_TARGET = 4.5  # served at the top concurrency >= 4.5 x PyTorch one-at-a-time tokens/s
TTFT_TARGET = 1.1  # served TTFT p50 at one stream <= 1.1 x PyTorch's first-token time


@dataclass
class Row:
    model: str
    system: str
    setting: str
    tokens_per_s: float
    ttft_ms_p50: float
    ttft_ms_p90: float
    requests: int
    # Served rows: the engine's own counters over the row (where its step time went).
    mean_rows_per_step: float | None = None
    prefill_share: float | None = None  # prompt forwards / (prompt + decode forwards), by time
    decode_ms_per_step: float | None = None
    prefill_ms_per_forward: float | None = None


# -- PyTorch baselines ------------------------------------------------------------------------------
def pytorch_rows(name: str, path: Path, texts: list[str], new_tokens: int, threads: int, one_at_a_time: int) -> list[Row]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    torch.set_num_threads(threads)
    seq2seq = AutoConfig.from_pretrained(path).is_encoder_decoder
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kw = dict(do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)

    def generate(batch: list[str], n: int) -> float:
        enc = tok(batch, return_tensors="pt", padding=True)
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=n, **kw)
        return time.perf_counter() - t

    generate(texts[:1], 2)  # warm
    first = [generate([t], 1) for t in texts[:one_at_a_time]]
    solo = [generate([t], new_tokens) for t in texts[:one_at_a_time]]
    batch = generate(texts[:16], new_tokens)
    return [
        Row(name, "pytorch", "one at a time", new_tokens * len(solo) / sum(solo), statistics.median(first) * 1e3,
            sorted(first)[int(0.9 * (len(first) - 1))] * 1e3, len(solo)),
        Row(name, "pytorch", "static batch 16", new_tokens * 16 / batch, batch * 1e3, batch * 1e3, 16),
    ]


# -- served ------------------------------------------------------------------------------------------
async def served_row(url: str, name: str, model: str, texts: list[str], concurrency: int, per_stream: int,
                     new_tokens: int, stagger_s: float, system: str = "served") -> Row:
    from tritonize.client import AsyncGenerationClient

    ttfts: list[float] = []
    tokens = 0

    async def stream(user: int) -> None:
        nonlocal tokens
        await asyncio.sleep(user * stagger_s)
        for r in range(per_stream):
            prompt = texts[(user * per_stream + r) % len(texts)]
            sent, first = time.perf_counter(), None
            async for chunk in c.stream_chunks(prompt, model=model, max_new_tokens=new_tokens):
                if chunk.token_ids and first is None:
                    first = time.perf_counter()
                    ttfts.append(first - sent)
                tokens += len(chunk.token_ids)

    async with AsyncGenerationClient(url) as c:
        await c.generate(texts[0], model=model, max_new_tokens=2)  # warm
        start = time.perf_counter()
        await asyncio.gather(*(stream(u) for u in range(concurrency)))
        seconds = time.perf_counter() - start
    ttfts.sort()
    return Row(name, system, f"{concurrency} streams", tokens / seconds, statistics.median(ttfts) * 1e3,
               ttfts[int(0.9 * (len(ttfts) - 1))] * 1e3, len(ttfts))


def convert(name: str, path: Path, repo: Path, threads: int) -> None:
    from tritonize.contract.generation import Limits
    from tritonize.converters.generation.gpt2 import convert_gpt2
    from tritonize.converters.generation.t5 import convert_t5

    limits = Limits(max_new_tokens=256, max_sequences=16, max_queue=64, intra_op_threads=threads)
    (convert_gpt2 if name == "gpt2" else convert_t5)(str(path), repo, name, limits, log=console.print)


def solo_prefill_copy(repo: Path, name: str) -> str:
    """The served model again under another name, with batched prefill off (`max_prefill_tokens=1`);
    its files are hard links, so nothing is converted or copied twice."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    copy = name + SOLO_PREFILL
    shutil.rmtree(repo / copy, ignore_errors=True)
    shutil.copytree(repo / name, repo / copy, copy_function=os.link)
    config = text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())
    config.name = copy
    config.parameters["max_prefill_tokens"].string_value = "1"
    (repo / copy / "config.pbtxt").unlink()  # a hard link to the original's: replace, never write through
    (repo / copy / "config.pbtxt").write_text(text_format.MessageToString(config))
    return copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["gpt2", "t5"], choices=["gpt2", "t5"])
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads and ONNX Runtime threads")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--stagger-ms", type=float, default=100.0, help="delay between the first requests of the streams")
    ap.add_argument("--requests", type=int, default=4, help="requests each served stream makes, back to back; PyTorch one-at-a-time runs twice as many")
    ap.add_argument("--no-prefill-baseline", dest="prefill_baseline", action="store_false",
                    help="skip the side-by-side copy with batched prefill off")
    ap.add_argument("--output", type=Path, default=Path("bench_results/generation_bench.json"))
    args = ap.parse_args()
    reexec_with_huge_pages("benchmarks.generation_bench")  # in-process baselines on the served steps' allocator

    from tritonize.server import ServerConfig, TritonServer

    repo = CACHE / "model_repository"
    builders = {"gpt2": build_gpt2_small, "t5": build_t5_small}
    paths = {m: builders[m](CACHE / f"{m}-random") for m in args.models}
    for m in args.models:
        convert(m, paths[m], repo, args.threads)
    for stale in repo.glob(f"*{SOLO_PREFILL}"):  # from an earlier run, perhaps of other models
        shutil.rmtree(stale)
    served = {m: [(m, "served")] + ([(solo_prefill_copy(repo, m), SOLO_SYSTEM)] if args.prefill_baseline else []) for m in args.models}
    texts = prompts()
    rows: list[Row] = []
    for m in args.models:
        console.print(f"[bold]{m}[/bold]: PyTorch generate ...")
        rows += pytorch_rows(m, paths[m], texts, args.new_tokens, args.threads, max(4, args.requests * 2))
    with TritonServer(ServerConfig(repo, http_port=0, grpc_port=0, metrics_port=0)) as server:
        for m in args.models:
            for c in args.concurrency:
                for model, system in served[m]:
                    console.print(f"[bold]{model}[/bold]: {system}, {c} concurrent streams ...")
                    before = engine_counters(server.metrics_url, model)
                    row = asyncio.run(served_row(server.grpc_url, m, model, texts, c, args.requests, args.new_tokens,
                                                 args.stagger_ms / 1e3, system))
                    rows.append(with_engine_split(row, before, engine_counters(server.metrics_url, model)))
    report(rows, args)


def engine_counters(metrics_url: str, model: str) -> dict[str, float]:
    from tritonize.planner.triton_stats import metrics

    prefix, tail = "tritonize_generation_", f"_total{{{model}}}"
    return {k[len(prefix) : -len(tail)]: v for k, v in metrics(metrics_url).items() if k.startswith(prefix) and k.endswith(tail)}


def with_engine_split(row: Row, before: dict[str, float], after: dict[str, float]) -> Row:
    """Where the engine's time went during the row: on CPU a prompt forward is compute-bound (it costs
    about its tokens), so joiners' prefills, not decode steps, bound throughput at many streams."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    steps, forwards = d.get("steps", 0.0), d.get("prefill_forwards", 0.0)
    busy = d.get("prefill_seconds", 0.0) + d.get("decode_seconds", 0.0)
    if steps and forwards and busy:
        row.mean_rows_per_step = d["step_rows"] / steps
        row.prefill_share = d["prefill_seconds"] / busy
        row.decode_ms_per_step = d["decode_seconds"] * 1e3 / steps
        row.prefill_ms_per_forward = d["prefill_seconds"] * 1e3 / forwards
    return row


def report(rows: list[Row], args) -> None:
    table = Table(title=f"greedy, {args.new_tokens} new tokens, {args.threads} threads, streams staggered by {args.stagger_ms:.0f} ms")
    for col in ("model", "system", "setting", "tokens/s", "TTFT p50 ms", "TTFT p90 ms", "requests", "rows/step", "decode ms/step",
                "prefill ms/forward", "prefill share"):
        table.add_column(col, justify="left" if col in ("model", "system", "setting") else "right")
    for r in rows:
        split = (["", "", "", ""] if r.prefill_share is None else
                 [f"{r.mean_rows_per_step:.1f}", f"{r.decode_ms_per_step:.0f}", f"{r.prefill_ms_per_forward:.0f}", f"{r.prefill_share:.0%}"])
        table.add_row(r.model, r.system, r.setting, f"{r.tokens_per_s:.1f}", f"{r.ttft_ms_p50:.1f}", f"{r.ttft_ms_p90:.1f}", str(r.requests), *split)
    console.print(table)
    ratios, verdicts = {}, {}
    top = max(args.concurrency)
    for m in sorted({r.model for r in rows}):
        by = {(r.system, r.setting): r for r in rows if r.model == m}
        base = by[("pytorch", "one at a time")]
        for system in ("served", SOLO_SYSTEM):
            tag = "" if system == "served" else " (batched prefill off)"
            if (system, f"{top} streams") in by:
                key = f"{m}: served {top} streams{tag} / pytorch one at a time (tokens/s, target >= {TOKENS_TARGET})"
                ratios[key] = by[(system, f"{top} streams")].tokens_per_s / base.tokens_per_s
                verdicts[key] = ratios[key] >= TOKENS_TARGET
            if (system, "1 streams") in by:
                key = f"{m}: served TTFT p50 at 1 stream{tag} / pytorch first-token time (target <= {TTFT_TARGET})"
                ratios[key] = by[(system, "1 streams")].ttft_ms_p50 / base.ttft_ms_p50
                verdicts[key] = ratios[key] <= TTFT_TARGET
        if ("served", f"{top} streams") in by and (SOLO_SYSTEM, f"{top} streams") in by:
            ratios[f"{m}: batched prefill on / off at {top} streams (tokens/s)"] = (
                by[("served", f"{top} streams")].tokens_per_s / by[(SOLO_SYSTEM, f"{top} streams")].tokens_per_s)
            ratios[f"{m}: batched prefill on / off at {top} streams (TTFT p50)"] = (
                by[("served", f"{top} streams")].ttft_ms_p50 / by[(SOLO_SYSTEM, f"{top} streams")].ttft_ms_p50)
        ratios[f"{m}: pytorch static batch 16 / one at a time (tokens/s)"] = by[("pytorch", "static batch 16")].tokens_per_s / base.tokens_per_s
    for k, v in ratios.items():
        verdict = "" if k not in verdicts else ("  [green]met[/green]" if verdicts[k] else "  [red]missed[/red]")
        console.print(f"  {k}: {v:.2f}{verdict}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows], "ratios": ratios,
                                       "targets_met": verdicts}, indent=2))
    console.print(f"raw figures: {args.output}")


if __name__ == "__main__":
    main()
