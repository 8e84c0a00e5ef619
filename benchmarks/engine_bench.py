"""Engine benchmark: PyTorch eager vs ONNX Runtime in-process vs the served pipeline, one run.

    .venv/bin/python -m benchmarks.engine_bench [--seconds 6] [--rounds 1] [--threads 2] [--flavours fused,python] [--pin]

The served pipeline in each flavour side by side: `fused` (one Python-backend step) and `python` (the
three-step ensemble: tokenizer -> model -> postprocess).

all-MiniLM-L6-v2 (embedding, tokenization and pooling included everywhere) at 16 and 128 tokens and
on a realistic mix of text lengths. In-process: one call per batch of texts. Served: gRPC (asyncio
client), one text per request, `concurrency` requests in flight; at concurrency 1 also with the blocking
client (`conc=1 blocking`, the row the 1 ms latency target reads: the asyncio client's own event loop
measured ~1 ms more per call on this machine, client work, not the server's). Prints a table, the ratios the
foundation issue targets, and writes the raw figures to bench_results/engine_bench.json.

`--pin` (two cores or more): the engine runs on core 0 in both places (tritonserver and its stubs, or
this process for the in-process rows) and the gRPC client on core 1, with one engine thread. Unpinned,
the client shares the server's cores, so the served rows pay for the client's CPU and the in-process
rows pay for none: at concurrency 32 on len16 the server used about the in-process engine's CPU per
text (4.8-5.5 vs 5.2 ms) while serving 0.80x its texts/s. Pinned, both sides get the same core.

The two targets (served conc=32 >= 0.9x in-process best, conc=1 p50 within 1 ms) are read from
`--pairs` alternating windows of in-process and served calls, seconds apart, not from the table's rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from tritonize.planner.triton_stats import metrics
from tritonize.planner.workloads import fixed_tokens, mixed_lengths
from tritonize.server.memory import reexec_with_huge_pages

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SERVED = "minilm"  # + "-" + flavour


def served_name(flavour: str) -> str:
    return f"{SERVED}-{flavour}"


def engine_step(flavour: str) -> str:
    """The model that runs the engine (and counts tokens): the fused model itself, or the ensemble's step."""
    return served_name(flavour) if flavour == "fused" else f"{served_name(flavour)}_model"
console = Console()


@dataclass
class Result:
    system: str
    workload: str
    setting: str  # batch=N (in-process) or conc=N (served)
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None = None  # served: CPU time of tritonserver and its stubs per text
    p50_gap_ms: float | None = None  # served conc=1 blocking: p50 - in-process batch=1 p50 over the same texts


def summarize(system, workload, setting, texts: int, seconds: float, latencies: list[float]) -> Result:
    lat = np.array(latencies) * 1e3
    result = Result(system, workload, setting, texts / seconds, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)))
    result.latencies_ms = lat  # in call order (not saved): texts[0], texts[1], ... for batch=1 and conc=1 blocking
    return result


def paired_p50_gap(served: Result, inprocess: Result) -> float:
    """p50 of the served calls minus p50 of the in-process ones over the same texts: both walk the workload
    from its first text, so their first n calls are the same n texts. (Over a whole window each, the
    mix's p50 compared different subsets of lengths: off by up to ~5 ms either way.)"""
    n = min(len(served.latencies_ms), len(inprocess.latencies_ms))
    return float(np.percentile(served.latencies_ms[:n], 50) - np.percentile(inprocess.latencies_ms[:n], 50))


def median_of(results: list[Result]) -> Result:
    """One row from its rounds: the median of each figure."""
    med = lambda f: float(np.median([getattr(r, f) for r in results]))  # noqa: E731
    optional = {f: None if getattr(results[0], f) is None else med(f) for f in ("server_cpu_ms", "p50_gap_ms")}
    return Result(results[0].system, results[0].workload, results[0].setting, med("texts_per_s"), med("p50_ms"), med("p99_ms"), **optional)


def run_inprocess(system: str, encode: Callable[[list[str]], np.ndarray], workload: str, texts: list[str], batch: int, seconds: float) -> Result:
    encode(texts[:batch])  # warm
    latencies, done, i = [], 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        i += batch
        t = time.perf_counter()
        encode(chunk)
        latencies.append(time.perf_counter() - t)
        done += batch
    return summarize(system, workload, f"batch={batch}", done, time.perf_counter() - start, latencies)


async def _served(url: str, model: str, texts: list[str], concurrency: int, seconds: float, on_start: Callable[[], None] = lambda: None):
    import tritonclient.grpc.aio as aio
    from tritonclient.grpc import InferInput, InferRequestedOutput

    client = aio.InferenceServerClient(url)
    latencies: list[float] = []
    counter = iter(range(10**9))

    async def worker(deadline: float):
        while time.perf_counter() < deadline:
            text = texts[next(counter) % len(texts)]
            inp = InferInput("TEXT", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
            t = time.perf_counter()
            await client.infer(model, [inp], outputs=[InferRequestedOutput("EMBEDDING")])
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(time.perf_counter() + 1.0) for _ in range(concurrency)))  # warm
    latencies.clear()
    on_start()
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return latencies, elapsed


def _served_one_at_a_time(url: str, model: str, texts: list[str], seconds: float, on_start: Callable[[], None]):
    """One request in flight with the blocking gRPC client: no event loop between the caller and the
    server, so the latency is the server's plus the least client work Python allows."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    outputs = [grpc.InferRequestedOutput("EMBEDDING")]

    def call(text: str) -> float:
        inp = grpc.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        t = time.perf_counter()
        client.infer(model, [inp], outputs=outputs)
        return time.perf_counter() - t

    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:
        call(texts[0])
    on_start()
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        latencies.append(call(texts[len(latencies) % len(texts)]))
    elapsed = time.perf_counter() - start
    client.close()
    return latencies, elapsed


@dataclass
class Paired:
    """The two target ratios of one workload and flavour, from windows that alternate between the served
    pipeline and ONNX Runtime in process (the order flips each pair, so a steady drift cancels)."""

    workload: str
    flavour: str
    batch: int  # the in-process batch the conc=32 windows are compared with (its best in the main rows)
    conc32_ratios: list[float]  # served conc=32 texts/s / in-process texts/s, per pair
    gaps_ms: list[float]  # served conc=1 blocking p50 - in-process batch=1 p50 over the same texts, per pair

    @property
    def conc32(self) -> float:
        return float(np.median(self.conc32_ratios))

    @property
    def gap_ms(self) -> float:
        return float(np.median(self.gaps_ms))


def pinning(ap, args) -> tuple[int, set[int] | None, set[int] | None]:
    """`--pin` / `--threads` of a benchmark: (engine threads, engine cores, client cores). Pinned: the
    engine on core 0 with one thread, the client on core 1; unpinned: all cores, nothing moved."""
    if args.pin and (os.cpu_count() or 1) < 2:
        ap.error("--pin needs at least two cores")
    threads = args.threads or (1 if args.pin else os.cpu_count() or 1)
    return (threads, {0}, {1}) if args.pin else (threads, None, None)


def pin_process(cpus: set[int] | None) -> None:
    """Move every thread of this process (ONNX Runtime's and torch's pools included) onto `cpus`; threads
    started later inherit it. `os.sched_setaffinity(0, ...)` alone moves only the calling thread."""
    if cpus is None:
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            pass


def served_system(flavour: str) -> str:
    return f"served {flavour}"


def server_cpu_seconds(server_pid: int) -> float:
    """User + system CPU time of tritonserver and its stub processes so far. Unlike throughput on a
    shared machine, the CPU a request costs barely depends on what else runs."""
    from tritonize.server.stubs import stubs_of

    total = 0
    for pid in [server_pid, *(s.pid for s in stubs_of(server_pid))]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def run_served(url: str, server_pid: int, flavour: str, workload: str, texts: list[str], concurrency: int, seconds: float,
               blocking: bool = False) -> Result:
    """`blocking` (concurrency 1 only): the blocking client instead of the asyncio one (setting `conc=1 blocking`)."""
    cpu = []
    opened = lambda: cpu.append(server_cpu_seconds(server_pid))  # noqa: E731  the CPU window opens after the warm-up second

    async def measured():
        return await _served(url, served_name(flavour), texts, concurrency, seconds, on_start=opened)

    if blocking:
        latencies, elapsed = _served_one_at_a_time(url, served_name(flavour), texts, seconds, opened)
    else:
        latencies, elapsed = asyncio.run(measured())
    setting = f"conc={concurrency}" + (" blocking" if blocking else "")
    result = summarize(served_system(flavour), workload, setting, len(latencies), elapsed, latencies)
    result.server_cpu_ms = (server_cpu_seconds(server_pid) - cpu[0]) * 1e3 / max(len(latencies), 1)
    return result


def paired_windows(pairs: int, seconds: float, inprocess: Callable[[int], Result], served: Callable[[int, bool], Result],
                   best_batch: int, workload: str, flavour: str, engine_cpus: set[int] | None,
                   client_cpus: set[int] | None) -> Paired:
    """`pairs` x (in-process, served) windows of `seconds` each, back to back, for both targets. Rows
    measured a minute apart on this VM disagreed by up to 25% from drift alone; windows seconds apart
    see the same machine. `inprocess(batch)` and `served(concurrency, blocking)` measure one window."""
    ratios, gaps = [], []
    for k in range(pairs):
        def measure_inprocess():
            pin_process(engine_cpus)
            return inprocess(best_batch), inprocess(1)

        def measure_served():
            pin_process(client_cpus)
            return served(32, False), served(1, True)

        if k % 2 == 0:
            (best, one), (s32, s1) = measure_inprocess(), measure_served()
        else:
            (s32, s1), (best, one) = measure_served(), measure_inprocess()
        ratios.append(s32.texts_per_s / best.texts_per_s)
        gaps.append(paired_p50_gap(s1, one))
    return Paired(workload, flavour, best_batch, ratios, gaps)


def padding_counters(metrics_url: str, flavour: str) -> tuple[float, float]:
    m, step = metrics(metrics_url), engine_step(flavour)
    return m[f"tritonize_tokens_real_total{{{step}}}"], m[f"tritonize_tokens_computed_total{{{step}}}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0, help="measurement time per row")
    ap.add_argument("--rounds", type=int, default=1, help="measure every row this many times; report each row's median")
    ap.add_argument("--threads", type=int, default=None, help="engine threads, same for every system (default: all cores; 1 with --pin)")
    ap.add_argument("--pin", action="store_true", help="engine on core 0 (server or in process), client on core 1")
    ap.add_argument("--repository", type=Path, default=Path(".tritonize/bench_repository"))
    ap.add_argument("--flavours", default="fused,python", help="served flavours, side by side")
    ap.add_argument("--workloads", default="len16,len128,mix", help="a subset of len16,len128,mix")
    ap.add_argument("--pairs", type=int, default=6, help="alternating in-process / served windows for the two targets")
    ap.add_argument("--pair-seconds", type=float, default=1.5, help="seconds per window of a pair")
    ap.add_argument("--out", type=Path, default=Path("bench_results/engine_bench.json"))
    args = ap.parse_args()
    reexec_with_huge_pages("benchmarks.engine_bench")  # in-process baselines on the served steps' allocator
    args.threads, engine_cpus, client_cpus = pinning(ap, args)

    import torch
    from transformers import AutoModel, AutoTokenizer

    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.checkpoints import resolve
    from tritonize.converters.repository import Batching, read_manifest
    from tritonize.runtime.encoders.engine_onnx import encoder_session
    from tritonize.runtime.pooling import l2_normalize, mean_pool
    from tritonize.server import ServerConfig, TritonServer

    torch.set_num_threads(args.threads)
    flavours = args.flavours.split(",")
    for flavour in flavours:
        convert_bert(MODEL, "embedding", args.repository, served_name(flavour), flavour=flavour,
                     batching=Batching(max_batch_size=64, intra_op_threads=args.threads), log=console.print)
    tokenizer = AutoTokenizer.from_pretrained(resolve(MODEL))
    max_length = read_manifest(args.repository, served_name(flavours[0]))["pipeline"]["max_length"]  # as served
    model = AutoModel.from_pretrained(resolve(MODEL)).eval()
    # In-process ORT is the served engine's session on the served graph (threads, no spinning, the
    # same fusions), so the comparison is the serving path, not a different session.
    session = encoder_session(args.repository / engine_step(flavours[0]) / "1" / "model.onnx", args.threads)

    def torch_encode(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        return l2_normalize(mean_pool(hidden.numpy(), enc["attention_mask"].numpy()))

    def ort_encode(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
        return l2_normalize(mean_pool(session.run(None, feeds)[0], enc["attention_mask"]))

    workloads = {
        "len16": fixed_tokens(tokenizer, 16, 256),
        "len128": fixed_tokens(tokenizer, 128, 256),
        "mix": mixed_lengths(512, seed=1),
    }
    mix_tokens = [len(tokenizer.encode(t)) for t in workloads["mix"]]
    console.print(f"mix: {len(mix_tokens)} texts, {min(mix_tokens)}-{max(mix_tokens)} tokens, median {int(np.median(mix_tokens))}; threads={args.threads}"
                  + ("; engine on core 0, client on core 1" if args.pin else ""))
    np.testing.assert_allclose(ort_encode(workloads["mix"][:8]), torch_encode(workloads["mix"][:8]), atol=1e-4)
    workloads = {name: workloads[name] for name in args.workloads.split(",")}

    rounds: dict[tuple[str, str, str], list[Result]] = {}
    padding: dict[tuple[str, str], list[float]] = {}
    config = ServerConfig(args.repository, http_port=0, grpc_port=0, metrics_port=0,
                          cpus=",".join(map(str, sorted(engine_cpus))) if engine_cpus else None)
    with TritonServer(config) as server:
        # Per workload, the in-process rows and then the served ones; in rounds, each row's median. The
        # targets are read from `paired_windows` after them: rows a minute apart moved with this VM's
        # speed (15-25% over minutes: a ratio measured at the start and the end of a run, 0.74 -> 1.05).
        for _ in range(args.rounds):
            for name, texts in workloads.items():
                measured: list[Result] = []
                pin_process(engine_cpus)
                for batch in (1, 8, 32):
                    for system, fn in (("PyTorch eager", torch_encode), ("ORT in-process", ort_encode)):
                        measured.append(run_inprocess(system, fn, name, texts, batch, args.seconds))
                        console.print(measured[-1])
                pin_process(client_cpus)
                for flavour in flavours:  # side by side, so drift hits both alike
                    before = padding_counters(server.metrics_url, flavour)
                    measured.append(run_served(server.grpc_url, server.process.pid, flavour, name, texts, 1, args.seconds, blocking=True))
                    console.print(measured[-1])
                    for conc in (1, 8, 32):
                        measured.append(run_served(server.grpc_url, server.process.pid, flavour, name, texts, conc, args.seconds))
                        console.print(measured[-1])
                    after = padding_counters(server.metrics_url, flavour)
                    padding.setdefault((flavour, name), []).append((after[1] - before[1]) / max(after[0] - before[0], 1))
                one = next(r for r in measured if r.system == "ORT in-process" and r.setting == "batch=1")
                for r in measured:
                    if r.setting == "conc=1 blocking":
                        r.p50_gap_ms = paired_p50_gap(r, one)
                    rounds.setdefault((r.system, r.workload, r.setting), []).append(r)
        results = [median_of(rs) for rs in rounds.values()]
        paired = []
        for name, texts in workloads.items():
            best = max((r for r in results if r.system == "ORT in-process" and r.workload == name), key=lambda r: r.texts_per_s)
            for flavour in flavours:
                paired.append(paired_windows(
                    args.pairs, args.pair_seconds,
                    lambda batch: run_inprocess("ORT in-process", ort_encode, name, texts, batch, args.pair_seconds),
                    lambda conc, blocking: run_served(server.grpc_url, server.process.pid, flavour, name, texts, conc,
                                                      args.pair_seconds, blocking=blocking),
                    int(best.setting.split("=")[1]), name, flavour, engine_cpus, client_cpus))
                console.print(paired[-1])
    padding = {k: float(np.median(v)) for k, v in padding.items()}

    report(results, padding, flavours, list(workloads), paired)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "pinned": args.pin, "seconds": args.seconds, "results": [asdict(r) for r in results],
                                    "tokens_computed_per_real": {f"{f} {w}": v for (f, w), v in padding.items()},
                                    "paired": [asdict(x) for x in paired]}, indent=2))
    console.print(f"raw figures: {args.out}")


def report(results: list[Result], padding: dict[tuple[str, str], float], flavours: list[str], workloads: list[str],
           paired: list[Paired]) -> None:
    table = Table(title="all-MiniLM-L6-v2 embeddings: texts/s and latency per call")
    for col in ("workload", "system", "setting", "texts/s", "p50 ms", "p99 ms", "server CPU ms/text"):
        table.add_column(col, justify="right" if col not in ("workload", "system") else "left")
    for r in results:
        cpu = "" if r.server_cpu_ms is None else f"{r.server_cpu_ms:.2f}"
        table.add_row(r.workload, r.system, r.setting, f"{r.texts_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", cpu)
    console.print(table)

    def pick(system, workload, setting):
        return next(r for r in results if r.system == system and r.workload == workload and r.setting == setting)

    def best(system, workload):
        return max((r for r in results if r.system == system and r.workload == workload), key=lambda r: r.texts_per_s)

    checks = []
    for wl in workloads:
        t, o = best("PyTorch eager", wl), best("ORT in-process", wl)
        checks.append((f"{wl}: ORT / PyTorch, best throughput each", o.texts_per_s / t.texts_per_s, "", True))
        o1 = pick("ORT in-process", wl, "batch=1")
        for flavour in flavours:
            pair = next(x for x in paired if x.workload == wl and x.flavour == flavour)  # the target rows
            spread = lambda v: f" (pairs {min(v):.2f}-{max(v):.2f})"  # noqa: E731
            checks.append((f"{wl}: served {flavour} conc=32 / ORT in-process batch={pair.batch}, alternating windows"
                           + spread(pair.conc32_ratios), pair.conc32, ">= 0.9", pair.conc32 >= 0.9))
            checks.append((f"{wl}: served {flavour} conc=1 blocking p50 - ORT batch=1 p50, same texts, alternating windows (ms)"
                           + spread(pair.gaps_ms), pair.gap_ms, "<= 1 ms", pair.gap_ms <= 1.0))
            s32 = pick(served_system(flavour), wl, "conc=32")
            checks.append((f"{wl}: served {flavour} conc=32 / ORT in-process best, the rows above", s32.texts_per_s / o.texts_per_s, "", True))
            gap = pick(served_system(flavour), wl, "conc=1 blocking").p50_gap_ms
            checks.append((f"{wl}: served {flavour} conc=1 blocking p50 - ORT batch=1 p50, same texts, the rows above (ms)", gap, "", True))
            gap = pick(served_system(flavour), wl, "conc=1").p50_ms - o1.p50_ms  # the asyncio client's, for reference
            checks.append((f"{wl}: served {flavour} conc=1 p50 - ORT batch=1 p50 (ms)", gap, "", True))
        if set(flavours) >= {"fused", "python"}:
            f, p = pick(served_system("fused"), wl, "conc=32"), pick(served_system("python"), wl, "conc=32")
            checks.append((f"{wl}: served fused / python, conc=32 texts/s", f.texts_per_s / p.texts_per_s, "", True))
            f, p = pick(served_system("fused"), wl, "conc=1"), pick(served_system("python"), wl, "conc=1")
            checks.append((f"{wl}: served fused - python, conc=1 p50 (ms)", f.p50_ms - p.p50_ms, "", True))
            for conc in ("conc=1", "conc=32"):
                f, p = pick(served_system("fused"), wl, conc), pick(served_system("python"), wl, conc)
                checks.append((f"{wl}: server CPU per text, fused / python, {conc}", f.server_cpu_ms / p.server_cpu_ms, "", True))
    for flavour in flavours if "mix" in workloads else ():
        checks.append((f"mix: tokens computed / real tokens (served {flavour})", padding[(flavour, "mix")], "<= 1.25",
                       padding[(flavour, "mix")] <= 1.25))
    t = Table(title="ratios (issue 12 targets: served conc=32 >= 0.9x in-process best; conc=1 p50 within 1 ms)")
    for col in ("measure", "value", "target", "met"):
        t.add_column(col)
    for name, value, target, ok in checks:
        t.add_row(name, f"{value:.2f}", target, ("yes" if ok else "NO") if target else "")
    console.print(t)

if __name__ == "__main__":
    main()
