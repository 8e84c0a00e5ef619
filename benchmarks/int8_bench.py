"""int8 benchmark: fp32 vs dynamic vs static int8 of all-MiniLM-L6-v2 in ONNX Runtime, one thread, one run.

    .venv/bin/python -m benchmarks.int8_bench [--seconds 2] [--rounds 3]

Exports and fuses the model as `convert bert` does, quantises it both ways (the same calibration texts
and outlier rewrites), and measures accuracy against fp32 on the held-out texts and throughput on the
embed-mix text lengths at batch 1 and 16. Timing is texts per CPU second of this process (one intra-op
thread), the graphs taking turns for `--rounds` rounds, so that a shared machine slows all of them alike;
the table gives the median round. Also prints the plain (un-fused) graph's fp32 figure.

The served ratios (int8 and fp32 against FastAPI + PyTorch) come from a `tritonize plan ... --baselines`
run: `python -m benchmarks.investigations.plan_targets OUT/results.json`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tritonize.planner.workloads import mixed_lengths

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
console = Console(width=140)


def session(path: Path):
    """One thread, the served engine's session options."""
    from tritonize.runtime.encoders.engine_onnx import encoder_session

    return encoder_session(path, threads=1)


def texts_per_cpu_second(sess, feeds: list[tuple[dict, int]], seconds: float) -> float:
    sess.run(None, feeds[0][0])
    done, k, start = 0, 0, time.process_time()
    while time.process_time() - start < seconds:
        f, n = feeds[k % len(feeds)]
        sess.run(None, f)
        done, k = done + n, k + 1
    return done / (time.process_time() - start)


def build(work: Path) -> tuple[dict[str, Path], object, int, object]:
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig, AutoTokenizer

    from tritonize.converters.checkpoints import resolve
    from tritonize.converters.encoders.bert import max_sequence_length, optimize_graph
    from tritonize.converters.encoders.calibration import text_sets
    from tritonize.converters.encoders.quantize import Int8Options, quantize

    source = resolve(MODEL)
    tokenizer, config = AutoTokenizer.from_pretrained(source), AutoConfig.from_pretrained(source)
    max_length = max_sequence_length(tokenizer, config, source)
    main_export(source, work / "export", task="feature-extraction", library_name="transformers", do_validation=False)
    graphs = {"fp32 plain": work / "export" / "model.onnx", "fp32 fused": work / "fused.onnx"}
    optimize_graph(graphs["fp32 plain"], graphs["fp32 fused"], config)
    texts = text_sets()
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # What `--quantize` wrote before the calibrated rewrites: dynamic, no outlier handling, 7-bit weights.
    graphs["int8 dynamic, no rewrites (before)"] = work / "int8_before.onnx"
    quantize_dynamic(graphs["fp32 fused"], graphs["int8 dynamic, no rewrites (before)"], weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True, extra_options={"DefaultTensorType": TensorProto.FLOAT})
    for method in ("dynamic", "static"):
        started = time.monotonic()
        graphs[f"int8 {method}"] = work / f"int8_{method}.onnx"
        quantize(graphs["fp32 fused"], graphs[f"int8 {method}"], tokenizer, max_length, texts, Int8Options(method))
        console.print(f"int8 {method}: quantised in {time.monotonic() - started:.0f} s")
    return graphs, tokenizer, max_length, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per graph, batch size and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_results/int8_bench.json"))
    args = ap.parse_args()

    from tritonize.converters.encoders.quantize import EMBEDDING_FLOOR, accuracy, tokenized

    with tempfile.TemporaryDirectory(prefix="tritonize-int8-bench-") as tmp:
        graphs, tokenizer, max_length, texts = build(Path(tmp))
        sessions = {name: session(path) for name, path in graphs.items()}
        sizes = {name: path.stat().st_size / 2**20 for name, path in graphs.items()}
    fp32 = sessions["fp32 fused"]
    acc = {name: accuracy(fp32, s, tokenizer, "embedding", max_length, texts) for name, s in sessions.items()}
    mix = mixed_lengths(512, seed=1)  # the embed-mix lengths
    speed: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in (1, 16):
            for name, s in sessions.items():
                names = [i.name for i in s.get_inputs()]
                feeds = [(tokenized(tokenizer, mix[i:i + batch], names, max_length)[0], batch) for i in range(0, len(mix), batch)]
                speed.setdefault((name, batch), []).append(texts_per_cpu_second(s, feeds, args.seconds))
    med = {k: float(np.median(v)) for k, v in speed.items()}

    table = Table(title=f"all-MiniLM-L6-v2, ONNX Runtime, 1 thread: texts per CPU second (median of {args.rounds} rounds), "
                        f"accuracy vs fp32 on {len(texts.held_out)} held-out texts ({len(texts.calibration)} calibration texts)")
    for col in ("graph", "MB", "batch 1", "batch 16", "x fp32 b1", "x fp32 b16", "min cos", "mean cos"):
        table.add_column(col, justify="left" if col == "graph" else "right")
    base = {b: med[("fp32 fused", b)] for b in (1, 16)}
    for name in sessions:
        a = acc[name]
        table.add_row(name, f"{sizes[name]:.0f}", f"{med[(name, 1)]:,.0f}", f"{med[(name, 16)]:,.0f}", f"{med[(name, 1)] / base[1]:.2f}",
                      f"{med[(name, 16)] / base[16]:.2f}", f"{a['min_cosine_vs_fp32']:.4f}", f"{a['mean_cosine_vs_fp32']:.4f}")
    console.print(table)
    t = Table(title="int8 targets (accuracy floors; the served ratio is `tritonize plan ... --baselines`)")
    for col in ("graph", "min cos >= 0.98", "mean cos >= 0.995", "faster than fp32 at b1 and b16"):
        t.add_column(col)
    for name in ("int8 dynamic", "int8 static"):
        a = acc[name]
        faster = all(med[(name, b)] > base[b] for b in (1, 16))
        t.add_row(name, *("yes" if ok else "NO" for ok in (a["min_cosine_vs_fp32"] >= EMBEDDING_FLOOR["min_cosine_vs_fp32"],
                                                            a["mean_cosine_vs_fp32"] >= EMBEDDING_FLOOR["mean_cosine_vs_fp32"], faster)))
    console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": {f"{k[0]} b{k[1]}": v for k, v in speed.items()}, "accuracy": acc}, indent=2))
    console.print(f"raw figures: {args.out}")


if __name__ == "__main__":
    main()
