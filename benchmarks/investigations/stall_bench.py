"""Stall benchmark: the MiniLM pipeline with a queue policy on every step (the old default) and as
converted now (no queue policy on any step), side by side, server pinned to one core.

    .venv/bin/python -m benchmarks.investigations.stall_bench [--seconds 8] [--users 1,4,8]

Why: a queue policy (max_queue_size, queue timeout, timeout override) turns off Triton's payload
prefetching; the dynamic batcher then waits for a free instance in `WaitForPayloadSlotAvailable`, which
waits on its condition variable under a local mutex, so a wake-up that lands between its check and its
wait is lost and the request sits out the wait's 500 ms timeout. All server processes on one core
(a 1-CPU pod) hit that window often. The regression level: concurrency 4 and 8 on one core; the
target is p99 <= 3x p50 below saturation. Client threads run on the other core.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tritonize.planner.systems import Variant, pipeline_models, read_config, write_variant
from tritonize.planner.workloads import mixed_lengths

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SERVED = "minilm"
STALL_MS = 300
console = Console(width=120)  # the table stays readable in a log (no terminal)


def with_queue_policy_everywhere(repo: Path) -> Path:
    """The old default: max_queue_size 512 with timeout override on every step of the pipeline."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    for name in pipeline_models(repo, SERVED)[1:]:
        path = repo / name / "config.pbtxt"
        config = read_config(path)
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.default_queue_policy.CopyFrom(mc.ModelQueuePolicy(
                timeout_action=mc.ModelQueuePolicy.REJECT, allow_timeout_override=True, max_queue_size=512))
        path.write_text(text_format.MessageToString(config))
    return repo


def closed_loop(url: str, texts: list[str], users: int, seconds: float) -> np.ndarray:
    """`users` threads, one request (one text) in flight each; latencies in ms."""
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def user(offset: int) -> None:
        client, k = grpcclient.InferenceServerClient(url), offset
        while time.monotonic() < stop:
            text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            text.set_data_from_numpy(np.array([[texts[k % len(texts)].encode()]], dtype=object))
            k += 7
            started = time.perf_counter()
            client.infer(SERVED, [text])
            latencies.append((time.perf_counter() - started) * 1e3)
        client.close()

    threads = [threading.Thread(target=user, args=(i * 101,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(latencies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--users", default="1,4,8")
    ap.add_argument("--repository", type=Path, default=Path(".tritonize/bench_repository"))
    ap.add_argument("--server-cpus", default="0", help="cores for tritonserver and its stubs (taskset)")
    ap.add_argument("--client-cpus", default="1", help="cores for this process's load threads")
    args = ap.parse_args()

    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.repository import Batching
    from tritonize.server import ServerConfig, TritonServer

    convert_bert(MODEL, "embedding", args.repository, SERVED, flavour="python", batching=Batching(max_batch_size=64, intra_op_threads=1), log=console.print)
    os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    texts = mixed_lengths(1000, seed=3)
    scratch = Path(".tritonize/stall_bench")
    systems = {
        "queue policy on every step (before)": with_queue_policy_everywhere(write_variant(args.repository, SERVED, Variant(), scratch / "before")),
        "as converted: no queue policy (after)": write_variant(args.repository, SERVED, Variant(), scratch / "after"),
    }
    table = Table(title=f"MiniLM, server on core(s) {args.server_cpus}, {args.seconds:.0f} s per row")
    for col in ("system", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", f"> {STALL_MS} ms", "p99/p50"):
        table.add_column(col, justify="left" if col == "system" else "right")
    p99 = {}
    for label, repo in systems.items():
        config = ServerConfig(repo, http_port=0, grpc_port=0, metrics_port=0, cpus=args.server_cpus)
        with TritonServer(config) as server:
            closed_loop(server.grpc_url, texts, 2, 1.0)  # warm
            for users in [int(u) for u in args.users.split(",")]:
                lat = closed_loop(server.grpc_url, texts, users, args.seconds)
                q = {p: float(np.percentile(lat, p)) for p in (50, 95, 99)}
                p99[label, users] = q[99]
                table.add_row(label, str(users), f"{len(lat) / args.seconds:.0f}", f"{q[50]:.1f}", f"{q[95]:.1f}", f"{q[99]:.1f}",
                              f"{lat.max():.0f}", str(int((lat > STALL_MS).sum())), f"{q[99] / q[50]:.1f}")
    console.print(table)
    before, after = systems
    for users in [int(u) for u in args.users.split(",")]:
        console.print(f"users {users}: p99 after / before = {p99[after, users] / p99[before, users]:.2f}")


if __name__ == "__main__":
    main()
