"""Rerank benchmark: a cross-encoder served (`convert bert --task rerank`) vs the same code in process, one run.

    .venv/bin/python -m benchmarks.rerank_bench [--model PATH] [--documents 16] [--pairs 6] [--seconds 3] [--pin]

The model is a MiniLM-L6 cross-encoder: all-MiniLM-L6-v2's encoder (the packaged checkpoint) under a
one-logit classification head with random weights, the shape of cross-encoder/ms-marco-MiniLM-L-6-v2 (a
real cross-encoder with `--model`). A request is one query (4-12 words) and `--documents` passages of
mixed lengths (the embed-mix words, 8-120 words). Both sides run the same tokenization, length buckets,
ONNX Runtime session options and activation (`tritonize.runtime.encoders.rerank.Reranker`):
- in process: the pairs of R requests in one call, for R in 1, 4 and 16; the best R is the baseline;
- served: the asyncio client's `rerank_scores`, 32 requests in flight, over gRPC.

The ratio (target >= 0.9x) is read from `--pairs` alternating windows, in process then served, the order
flipped each pair, seconds apart (this machine's speed drifts over minutes). `--pin`: the engine on core 0
in both places (tritonserver, or this process), the client on core 1, one engine thread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.engine_bench import pin_process, pinning
from tritonize.planner.workloads import mixed_lengths

console = Console()
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SERVED = "bench-reranker"


def build_cross_encoder(folder: Path) -> Path:
    """all-MiniLM-L6-v2's encoder with a random one-logit head (seeded), saved once."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging

    from tritonize.converters.checkpoints import resolve

    logging.set_verbosity_error()  # "some weights newly initialized": the head, on purpose
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(resolve(MODEL), num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve(MODEL)).save_pretrained(folder)
    return folder


def workload(n: int, documents: int, seed: int = 3) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    passages = mixed_lengths(4096, seed=seed, low=8, high=120)
    queries = mixed_lengths(512, seed=seed + 1, low=4, high=12)
    return [(rng.choice(queries), rng.sample(passages, documents)) for _ in range(n)]


def inprocess(reranker, requests, batch: int, seconds: float) -> float:
    """Pairs/s with the pairs of `batch` requests in one call (the served step's work on one execution)."""
    from tritonize.runtime.encoders.rerank import Pairs

    def call(chunk):
        return reranker.run(Pairs.of(reranker.encode([(q, d) for q, docs in chunk for d in docs])))

    call(requests[:batch])  # warm
    done, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [requests[(i + k) % len(requests)] for k in range(batch)]
        i += batch
        call(chunk)
        done += sum(len(docs) for _, docs in chunk)
    return done / (time.perf_counter() - start)


async def _served(url: str, requests, concurrency: int, seconds: float) -> float:
    from tritonize.client import AsyncClient

    counter = iter(range(10**9))
    done = 0

    async def worker(client, deadline: float, count: bool):
        nonlocal done
        while time.perf_counter() < deadline:
            q, docs = requests[next(counter) % len(requests)]
            await client.rerank_scores(q, docs, model=SERVED)
            done += len(docs) if count else 0

    async with AsyncClient(url, timeout_s=120) as client:
        await asyncio.gather(*(worker(client, time.perf_counter() + 0.5, False) for _ in range(concurrency)))  # warm
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, start + seconds, True) for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def served(url: str, requests, concurrency: int, seconds: float) -> float:
    return asyncio.run(_served(url, requests, concurrency, seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a cross-encoder checkpoint (default: the MiniLM-L6 one built from the packaged encoder)")
    ap.add_argument("--documents", type=int, default=16, help="documents per request")
    ap.add_argument("--concurrency", type=int, default=32, help="served requests in flight")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per window")
    ap.add_argument("--pairs", type=int, default=6, help="alternating in-process / served windows")
    ap.add_argument("--threads", type=int, default=None, help="engine threads on both sides (default: all cores; 1 with --pin)")
    ap.add_argument("--pin", action="store_true", help="engine on core 0 (server or in process), client on core 1")
    ap.add_argument("--repository", type=Path, default=Path(".tritonize/rerank_bench_repository"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads, engine_cpus, client_cpus = pinning(ap, args)

    from tritonize.contract.encoders import Buckets, Reranking, Tokenizing
    from tritonize.contract.model_config import read_config
    from tritonize.converters.encoders.rerank import convert_rerank
    from tritonize.converters.repository import Batching
    from tritonize.runtime.encoders.rerank import Reranker
    from tritonize.server import ServerConfig, TritonServer

    model = args.model or str(build_cross_encoder(Path(".tritonize/bench_cross_encoder")))
    report = convert_rerank(model, args.repository, SERVED, batching=Batching(max_batch_size=64, intra_op_threads=threads),
                            log=console.print)
    folder = args.repository / SERVED / "1"
    params = {k: v.string_value for k, v in read_config(args.repository / SERVED / "config.pbtxt").parameters.items()}
    reranker = Reranker(folder / "tokenizer.json", folder / "model.onnx", Tokenizing.from_params(params).max_length,
                        Buckets.from_params(params), Reranking.from_params(params).activation)
    requests = workload(256, args.documents)
    tokens = [len(e.ids) for e in reranker.encode([(q, d) for q, docs in requests[:32] for d in docs])]
    console.print(f"{model}: scores vs {report.reference} max abs error {report.score_max_abs_error:.1e}; {args.documents} documents per "
                  f"request, pairs of {min(tokens)}-{max(tokens)} tokens (median {int(np.median(tokens))}); threads={threads}"
                  + ("; engine on core 0, client on core 1" if args.pin else ""))

    config = ServerConfig(args.repository, http_port=0, grpc_port=0, metrics_port=0,
                          cpus=",".join(map(str, sorted(engine_cpus))) if engine_cpus else None)
    with TritonServer(config) as server:
        pin_process(engine_cpus)
        best = {batch: inprocess(reranker, requests, batch, args.seconds) for batch in (1, 4, 16)}
        batch = max(best, key=lambda b: best[b])
        for b, rate in best.items():
            console.print(f"in process, {b} request(s) per call: {rate:,.0f} pairs/s")
        rows = []
        for k in range(args.pairs):
            def measure_inprocess():
                pin_process(engine_cpus)
                return inprocess(reranker, requests, batch, args.seconds)

            def measure_served():
                pin_process(client_cpus)
                return served(server.grpc_url, requests, args.concurrency, args.seconds)

            if k % 2 == 0:
                a = measure_inprocess()
                s = measure_served()
            else:
                s = measure_served()
                a = measure_inprocess()
            rows.append((a, s))
            console.print(f"pair {k + 1}: in process {a:,.0f} pairs/s, served {s:,.0f} pairs/s, ratio {s / a:.2f}x")

    table = Table(title=f"rerank pairs/s: served at concurrency {args.concurrency} vs ONNX Runtime in process ({batch} request(s) per call)")
    for col in ("", "in process", f"served conc={args.concurrency}", "served / in process", "target"):
        table.add_column(col)
    ratios = [s / a for a, s in rows]
    median = float(np.median(ratios))
    table.add_row("median of pairs", f"{np.median([a for a, _ in rows]):,.0f}", f"{np.median([s for _, s in rows]):,.0f}",
                  f"{median:.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f})", ">= 0.9x " + ("met" if median >= 0.9 else "NO"))
    console.print(table)


if __name__ == "__main__":
    main()
