"""Head benchmark: a CLS + Dense + Normalize embedder against a mean-pooled one of the same size, served side by side.

    .venv/bin/python -m benchmarks.head_bench [--seconds 3] [--rounds 6] [--concurrency 16 [1 ...]] [--pin] [--control]

Issue 23 asks that serving a checkpoint's own head (pooling, Dense, Normalize: `runtime.encoders.embedding_head`)
cost nothing noticeable: a Dense/CLS checkpoint embeds within 5% of the speed of a mean-pooled one of the same size.

- mean: all-MiniLM-L6-v2 itself (the packaged checkpoint: Transformer -> mean Pooling -> Normalize);
- cls-dense: the same Transformer module (weights, tokenizer, max_seq_length 256) under CLS Pooling -> Dense
  384->384 tanh (random weights, seed 0) -> Normalize, LaBSE's head at MiniLM's size, saved to a temporary folder.

Both are converted by `convert_bert` (fused flavour, ONNX Runtime, CPU) into one temporary repository and served by
one tritonserver. Before timing, each served pipeline is checked against `SentenceTransformer.encode` on texts of
the timed set plus an empty and an over-long one (min cosine >= 0.99999, or the run stops). Then the asyncio
client sends one text per request, N requests in flight, over a fixed mix of 512 texts (the embed-mix lengths,
4-64 words), the two models taking turns in `--rounds` rounds of `--seconds` each per model, the order flipped each
round (AB BA AB ...) so this machine's drift hits both alike. Each window also reads tritonserver's CPU seconds
(server and stubs) per text, which depends far less than texts/s on what else runs on the machine.

Prints per round and concurrency the texts/s and server CPU ms per text of each model and the ratio cls-dense / mean,
then the median ratio with its min-max and whether it is within 5% (0.95-1.05x). `--pin`: tritonserver and its
stubs on core 0 with one ONNX Runtime thread, this process (the client) on core 1. `--control`: a third model, the
mean checkpoint again under another name, in the rotation (ABC, BCA, CAB, ...) and the table: the ratio two identical
pipelines show, the method's own noise floor (each model runs in its own stub process; on a shared machine one
stub can run a few percent slower than another for the whole life of a server, which alternation does not cancel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.engine_bench import pin_process, pinning, server_cpu_seconds
from tritonize.planner.workloads import mixed_lengths

console = Console()
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MEAN, CLS_DENSE, COPY = "minilm-mean", "minilm-cls-dense", "minilm-mean-copy"
MIN_COSINE = 0.99999  # served vs SentenceTransformer.encode, per text (the converter's own floor)
WITHIN = 0.05


def build_cls_dense(folder: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2's Transformer module under CLS pooling, a seeded random Dense 384->384 tanh and Normalize."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    from tritonize.converters.checkpoints import resolve

    transformer = SentenceTransformer(resolve(MODEL), device="cpu")[0]  # as the checkpoint loads it: max_seq_length 256
    width = transformer.get_embedding_dimension()
    torch.manual_seed(seed)
    modules = [transformer, Pooling(width, pooling_mode="cls"), Dense(width, width, activation_function=torch.nn.Tanh()), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


async def _check(url: str, models: dict[str, str], texts: list[str]) -> dict[str, float]:
    """Min cosine per served model against `SentenceTransformer.encode` of its checkpoint, over `texts`."""
    from sentence_transformers import SentenceTransformer

    from tritonize.client import AsyncClient

    out = {}
    async with AsyncClient(url, timeout_s=120) as client:
        for name, checkpoint in models.items():
            reference = SentenceTransformer(checkpoint, device="cpu").encode(texts, convert_to_numpy=True)
            served = await client.embed(texts, model=name)
            if served.shape != reference.shape:
                raise SystemExit(f"{name}: served shape {served.shape}, encode's {reference.shape}")
            out[name] = float(cosines(served, reference).min())
    return out


@dataclass
class Window:
    model: str
    concurrency: int
    texts_per_s: float
    server_cpu_ms: float  # tritonserver and its stubs, per text


async def _drive(url: str, model: str, texts: list[str], concurrency: int, seconds: float, on_start) -> tuple[int, float]:
    from tritonize.client import AsyncClient

    counter = iter(range(10**9))
    done = 0

    async def worker(client, deadline: float, count: bool):
        nonlocal done
        while time.perf_counter() < deadline:
            await client.embed([texts[next(counter) % len(texts)]], model=model)
            done += count

    async with AsyncClient(url, timeout_s=120) as client:
        await asyncio.gather(*(worker(client, time.perf_counter() + 0.5, False) for _ in range(concurrency)))  # warm
        on_start()
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, start + seconds, True) for _ in range(concurrency)))
        return done, time.perf_counter() - start


def window(url: str, server_pid: int, model: str, texts: list[str], concurrency: int, seconds: float) -> Window:
    cpu: list[float] = []
    done, elapsed = asyncio.run(_drive(url, model, texts, concurrency, seconds, lambda: cpu.append(server_cpu_seconds(server_pid))))
    return Window(model, concurrency, done / elapsed, (server_cpu_seconds(server_pid) - cpu[0]) * 1e3 / max(done, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per model per round")
    ap.add_argument("--rounds", type=int, default=6, help="rounds; each runs every model, the order rotated every round")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16], help="requests in flight (one text each); several: each in turn")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per model (default: all cores; 1 with --pin)")
    ap.add_argument("--pin", action="store_true", help="tritonserver on core 0, the client on core 1")
    ap.add_argument("--control", action="store_true", help=f"also serve all-MiniLM-L6-v2 a second time ({COPY}) and time it the same way")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads, server_cpus, client_cpus = pinning(ap, args)

    from tritonize.converters.checkpoints import resolve
    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.repository import Batching
    from tritonize.server import ServerConfig, TritonServer

    texts = mixed_lengths(512, seed=1)
    check_texts = texts[:14] + ["", " ".join(texts[:40])]  # the empty text, and one past the 256-token limit
    console.print(f"texts: {len(texts)}, {min(len(t.split()) for t in texts)}-{max(len(t.split()) for t in texts)} words; "
                  f"threads={threads}" + ("; server on core 0, client on core 1" if args.pin else ""))
    with tempfile.TemporaryDirectory(prefix="head_bench-") as tmp:
        work = Path(tmp)
        checkpoints = {MEAN: resolve(MODEL), CLS_DENSE: str(build_cls_dense(work / "cls-dense"))}
        if args.control:  # the same checkpoint as MEAN in a stub of its own: what identical pipelines differ by here
            checkpoints[COPY] = resolve(MODEL)
        batching = Batching(max_batch_size=64, intra_op_threads=threads)
        for name, checkpoint in checkpoints.items():
            report = convert_bert(checkpoint, "embedding", work / "repository", name, batching=batching, log=lambda m: None)
            cos = "not compared" if report.st_min_cosine is None else f"{report.st_min_cosine:.7f}"
            console.print(f"{name}: {report.embedding}; converter's min cosine vs encode {cos} ({report.seconds:.0f} s)")

        config = ServerConfig(work / "repository", http_port=0, grpc_port=0, metrics_port=0,
                              cpus=",".join(map(str, sorted(server_cpus))) if server_cpus else None)
        with TritonServer(config) as server:
            checked = asyncio.run(_check(server.grpc_url, checkpoints, check_texts))
            for name, cos in checked.items():
                console.print(f"{name}: served vs SentenceTransformer.encode, {len(check_texts)} texts, min cosine {cos:.7f} "
                              + ("ok" if cos >= MIN_COSINE else f"BELOW {MIN_COSINE}"))
            if min(checked.values()) < MIN_COSINE:
                raise SystemExit("a served pipeline differs from encode: not timing it")
            pin_process(client_cpus)
            models = list(checkpoints)
            rounds: dict[int, list[dict[str, Window]]] = {c: [] for c in args.concurrency}
            for concurrency in args.concurrency:
                for k in range(args.rounds):
                    order = models[k % len(models):] + models[:k % len(models)]  # two models: AB, BA, AB, ...
                    got = {m: window(server.grpc_url, server.process.pid, m, texts, concurrency, args.seconds) for m in order}
                    rounds[concurrency].append(got)
                    console.print(f"conc={concurrency} round {k + 1} ({order[0]} first): " + ", ".join(
                        f"{m} {got[m].texts_per_s:,.1f} texts/s ({got[m].server_cpu_ms:.2f} ms CPU/text)"
                        + ("" if m == MEAN else f" {got[m].texts_per_s / got[MEAN].texts_per_s:.3f}x") for m in models))
    report_table(rounds, [m for m in models if m != MEAN])


def report_table(rounds: dict[int, list[dict[str, Window]]], compared: list[str]) -> None:
    table = Table(title=f"served texts/s against {MEAN} (mean + Normalize); {CLS_DENSE}: CLS + Dense 384->384 tanh + Normalize")
    for col in ("conc", "model", f"{MEAN}", "model's", "ratio: median (min-max)", "server CPU/text ratio", "within 5%"):
        table.add_column(col, no_wrap=True)
    for concurrency, windows in rounds.items():
        for name in compared:
            ratios = [w[name].texts_per_s / w[MEAN].texts_per_s for w in windows]
            cpu = [w[name].server_cpu_ms / w[MEAN].server_cpu_ms for w in windows]
            median = float(np.median(ratios))
            table.add_row(str(concurrency), name, f"{np.median([w[MEAN].texts_per_s for w in windows]):,.1f}",
                          f"{np.median([w[name].texts_per_s for w in windows]):,.1f}",
                          f"{median:.3f}x ({min(ratios):.3f}-{max(ratios):.3f})", f"{np.median(cpu):.3f}x ({min(cpu):.3f}-{max(cpu):.3f})",
                          "yes" if abs(median - 1) <= WITHIN else "NO")
    console.print(table)


if __name__ == "__main__":
    main()
