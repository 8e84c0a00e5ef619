"""Chatbot benchmark, side by side in one run on one server: retrieval latency against the embedding
pipeline alone, and a 100,000-entry FAQ (exact search and FAISS) against a 100-entry one.

    .venv/bin/python -m benchmarks.chat_bench [--rounds 10] [--entries 100000]

The real all-MiniLM-L6-v2 embeds (nothing downloads); the generator is the tiny GPT-2 (retrieval mode
never calls it). The 100-entry FAQ is the demo FAQ plus entries whose questions are embedded for real.
The large FAQs add synthetic entries whose vectors are random unit vectors: embedding 100,000 questions
with MiniLM on a CPU takes most of an hour, and search time does not depend on what the vectors mean
(random vectors are, if anything, harder for HNSW than clustered real ones). The demo entries stay, so
every FAQ answers the questions with the same entries; the run checks that.

One question at a time (concurrency 1), calls interleaved round by round so that drift on a shared
machine hits every system alike. Prints p50/p95 per system, the ratios the issue targets and in-process
search times; writes bench_results/chat_bench.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

CACHE = Path.home() / ".cache" / "tritonize" / "chat-bench"
EMBEDDER, GENERATOR = "minilm", "tiny-gpt2"
QUESTIONS = [  # worded unlike the demo FAQ's questions
    "What command launches Triton with my converted models?",
    "Which endpoint tells me whether the service is ready?",
    "What kinds of models are supported for conversion?",
    "How can I receive the generated tokens as they are produced?",
    "What does the generator do when it is overloaded with requests?",
    "Is GPU inference supported?",
    "How do I write the generated audio to a .wav file?",
    "What should the FAQ file for the chatbot look like?",
    "How can I benchmark the server under load with Locust?",
    "Can I use it without an internet connection?",
    "Explain how Triton batches requests dynamically.",
    "How is wasted padding kept small when batching sentences of different lengths?",
]
console = Console()


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


# -- the repository ---------------------------------------------------------------------------------
def synthetic_entries(n: int, start: int, seed: int):
    from tritonize.planner.workloads import WORDS
    from tritonize.converters.chat.faq import FaqEntry

    rng = random.Random(seed)
    return [FaqEntry(f"synthetic-{start + i}", " ".join(rng.choices(WORDS, k=8)).capitalize() + "?",
                     " ".join(rng.choices(WORDS, k=20)).capitalize() + ".") for i in range(n)]


def build(repo: Path, entries: int, threads: int) -> dict[str, str]:
    """The embedder, the generator and three chatbots; large FAQs are reused from the cache."""
    from tritonize.converters.chat.convert import DEFAULT_TEMPLATE, ChatbotReport, generator_settings, write_from_vectors, write_manifest
    from tritonize.converters.chat.embed import PipelineEmbedder
    from tritonize.converters.chat.faq import demo_faq, read_faq
    from tritonize.converters.chat.repository import ChatbotSpec
    from tritonize.converters.checkpoints import fingerprint
    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.contract.generation import Limits
    from tritonize.converters.generation.gpt2 import convert_gpt2
    from tritonize.converters.generation.tiny import build_tiny_gpt2
    from tritonize.converters.repository import Batching, read_manifest

    quiet = lambda m: None  # noqa: E731
    convert_bert("sentence-transformers/all-MiniLM-L6-v2", "embedding", repo, EMBEDDER, batching=Batching(intra_op_threads=threads), log=quiet)
    if not (CACHE / "tiny-gpt2" / "config.json").exists():
        build_tiny_gpt2(CACHE / "tiny-gpt2")
    convert_gpt2(str(CACHE / "tiny-gpt2"), repo, GENERATOR, Limits(max_new_tokens=64, intra_op_threads=threads), log=quiet)
    family, limits = generator_settings(repo, GENERATOR)
    small = read_faq(demo_faq())
    small += synthetic_entries(100 - len(small), 0, seed=1)
    small_vectors = PipelineEmbedder(repo, EMBEDDER).embed([e.question for e in small])
    rng = np.random.default_rng(2)
    names = {"100 entries, exact": "faq-100", f"{entries:,} entries, exact": f"faq-{entries}-exact",
             f"{entries:,} entries, FAISS HNSW": f"faq-{entries}-faiss"}
    for label, name in names.items():
        index = "faiss" if "FAISS" in label else "exact"
        n = 100 if name == "faq-100" else entries
        key = fingerprint(f"chat-bench-{n}", {"index": index, "embedder": (read_manifest(repo, EMBEDDER) or {}).get("key"),
                                                "generator": (read_manifest(repo, GENERATOR) or {}).get("key")}, "chat")
        if (read_manifest(repo, name) or {}).get("key") == key:
            continue
        console.print(f"writing {name} ({n:,} entries, {index}) ...")
        faq, vectors = small, small_vectors
        if n > len(small):
            extra = rng.standard_normal((n - len(small), small_vectors.shape[1]), dtype=np.float32)
            faq = small + synthetic_entries(n - len(small), len(small), seed=3)
            vectors = np.concatenate([small_vectors, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
        spec = ChatbotSpec(name, EMBEDDER, GENERATOR, family, limits, index)
        seconds = write_from_vectors(repo, spec, faq, vectors, DEFAULT_TEMPLATE)
        report = ChatbotReport(name, spec.stream_name, n, EMBEDDER, GENERATOR, index, spec.threshold, spec.top_k, str(repo),
                               index_seconds=round(seconds, 1))
        write_manifest(repo, spec, key, report)
        console.print(f"  index built in {seconds:.1f} s")
    return names


# -- measurements -----------------------------------------------------------------------------------
def served(url: str, names: dict[str, str], rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    from tritonize.client import ChatClient, Client

    times: dict[str, list[float]] = {"embedding pipeline": [], **{label: [] for label in names}}
    agree = {label: 0 for label in names}
    with Client(url) as embed, ChatClient(url) as chat:
        for q in QUESTIONS:  # warm every path
            embed.embed([q], model=EMBEDDER)
            for name in names.values():
                chat.ask(q, model=name, mode="retrieval")
        for _ in range(rounds):
            for q in QUESTIONS:
                t = time.perf_counter()
                embed.embed([q], model=EMBEDDER)
                times["embedding pipeline"].append(time.perf_counter() - t)
                sources = {}
                for label, name in names.items():
                    t = time.perf_counter()
                    answer = chat.ask(q, model=name, mode="retrieval", threshold=-1.0)
                    times[label].append(time.perf_counter() - t)
                    sources[label] = answer.source
                first = sources[next(iter(names))]
                for label in names:
                    agree[label] += sources[label] == first
    total = rounds * len(QUESTIONS)
    return times, {label: n / total for label, n in agree.items()}


def in_process(repo: Path, names: dict[str, str], repeats: int = 30) -> dict[str, float]:
    """Search alone, outside the server: ms per question (p50), with a real query vector."""
    from tritonize.converters.chat.embed import PipelineEmbedder
    from tritonize.runtime.chat.index import Faq, load_index

    query = PipelineEmbedder(repo, EMBEDDER).embed(QUESTIONS[:1])[0]
    out = {}
    for label, name in names.items():
        folder = repo / name / "1"
        index = load_index(folder, "faiss" if "FAISS" in label else "exact", Faq.load(folder))
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            index.search(query, 3)
            samples.append(time.perf_counter() - t)
        out[label] = statistics.median(samples) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help=f"passes over the {len(QUESTIONS)} questions")
    ap.add_argument("--entries", type=int, default=100_000, help="entries of the large FAQ")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the embedder")
    ap.add_argument("--output", type=Path, default=Path("bench_results/chat_bench.json"))
    args = ap.parse_args()

    from tritonize.server import ServerConfig, TritonServer

    repo = CACHE / "model_repository"
    names = build(repo, args.entries, args.threads)
    search_ms = in_process(repo, names)
    with TritonServer(ServerConfig(repo, http_port=0, grpc_port=0, metrics_port=0)) as server:
        console.print(f"measuring: {args.rounds} rounds x {len(QUESTIONS)} questions, one at a time ...")
        times, agreement = served(server.grpc_url, names, args.rounds)
    report(times, agreement, search_ms, args)


def report(times: dict[str, list[float]], agreement: dict[str, float], search_ms: dict[str, float], args) -> None:
    p50 = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    table = Table(title="one question at a time, retrieval mode, calls interleaved")
    for col in ("system", "p50 ms", "p95 ms", "search alone ms", "same top-1 as 100"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for k, v in times.items():
        table.add_row(k, f"{p50[k]:.2f}", f"{_p(v, 0.95) * 1e3:.2f}", f"{search_ms[k]:.2f}" if k in search_ms else "",
                      f"{agreement[k]:.0%}" if k in agreement else "")
    console.print(table)
    small, big_exact, big_faiss = list(search_ms)
    ratios = {
        "retrieval (100 entries) p50 / embedding pipeline p50 (target <= 1.3)": p50[small] / p50["embedding pipeline"],
        f"{big_exact} p50 / 100 entries p50 (target <= 2)": p50[big_exact] / p50[small],
        f"{big_faiss} p50 / 100 entries p50 (target <= 1.2)": p50[big_faiss] / p50[small],
    }
    for k, v in ratios.items():
        console.print(f"  {k}: {v:.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "p50_ms": p50,
                                       "search_alone_ms": search_ms, "same_top1": agreement, "ratios": ratios}, indent=2))
    console.print(f"raw figures: {args.output}")


if __name__ == "__main__":
    main()
