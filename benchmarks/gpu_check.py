"""GPU check (issue 9): every family on the PyTorch engine inside the real Triton server, measured in one run.

    bash benchmarks/gpu_check.sh                 # the GPU machine: carried wheels, then this script
    python -m benchmarks.gpu_check --dry-run --out /tmp/gpu   # tiny shapes on CPU, seconds (CI)

Builds every model from a config (random weights; nothing downloads): a BERT-base-shaped encoder, a
GPT-2-small-shaped generator and an MMS-TTS-sized VITS (plus tiny ones for the dtype parity checks),
converts them for the PyTorch engine (`--device cuda --dtype float16` by default), starts the embedded
tritonserver and measures, in the same run: encoder engine throughput in process (batch 1..128, seq
128) and served (concurrency 1..256, dynamic batching on and off), end-to-end p50/p99 at concurrency 1,
GPU memory; GPT-2 tokens/s and time to first token at 1, 16 and 64 streams vs Hugging Face `generate`
one request at a time and as one static batch; VITS real-time factor alone and at concurrency 16. It
prints the issue's target ratios (never asserts them) and writes gpu_check.json and gpu_check.md to
--out (default $OUT). A section that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# Before torch loads: the same OpenMP policy as the served steps (runtime/engine_torch.py), so the
# in-process and served CPU figures of a dry run are taken alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks import gpu_measure as m  # noqa: E402
from benchmarks.gpu_report import markdown, ratios  # noqa: E402
from tritonize.planner.workloads import WORDS, fixed_tokens  # noqa: E402

VITS_TEXT = "The server batches sentences from many requests together, and each one keeps its own voice and seed."


@dataclass(frozen=True)
class Plan:
    device: str = "cuda"
    dtype: str = "float16"
    encoder_size: str = "base"  # base | tiny
    gpt2_size: str = "small"  # small | tiny
    vits_size: str = "mms"  # mms | tiny
    seq_len: int = 128
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    concurrency: tuple[int, ...] = (1, 4, 16, 64, 128, 256)
    seconds: float = 3.0  # per measured point
    streams: tuple[int, ...] = (1, 16, 64)
    new_tokens: int = 64
    requests_per_stream: int = 2
    speech: tuple[tuple[int, int], ...] = ((1, 6), (16, 2))  # (concurrency, requests per client)
    parity_dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    budget_s: float = 450.0  # sections left when this is spent are skipped (the issue allows 8 minutes)
    max_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if not self.batch_sizes or not self.concurrency or not self.streams:
            raise ValueError("batch_sizes, concurrency and streams must each name at least one value")
        if self.seconds <= 0 or self.budget_s <= 0:
            raise ValueError(f"seconds and budget_s must be > 0, got {self.seconds} and {self.budget_s}")


DRY_RUN = Plan(device="cpu", dtype="float32", encoder_size="tiny", gpt2_size="tiny", vits_size="tiny", seq_len=16, batch_sizes=(1, 4),
               concurrency=(1, 4), seconds=0.3, streams=(1, 4), new_tokens=6, requests_per_stream=1, speech=((1, 1), (4, 1)),
               parity_dtypes=("float32", "bfloat16"), budget_s=240.0, max_batch_size=16)


@dataclass
class Run:
    plan: Plan
    out: Path
    work: Path
    started: float = field(default_factory=time.monotonic)
    results: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    def section(self, name: str, fn) -> None:
        left = self.plan.budget_s - (time.monotonic() - self.started)
        if left <= 0:
            self.errors[name] = f"skipped: the {self.plan.budget_s:.0f} s budget was spent"
            print(f"[gpu_check] {name}: skipped (budget spent)", flush=True)
            return
        t = time.monotonic()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            self.results[name] = fn()
        except Exception as e:  # record it and go on: one GPU session must give every section it can
            self.errors[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
            print(f"[gpu_check] {name} FAILED: {type(e).__name__}: {e}", flush=True)
        print(f"[gpu_check] {name}: {time.monotonic() - t:.1f} s", flush=True)


def environment(plan: Plan) -> dict:
    import numpy
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "numpy": numpy.__version__, "cuda_available": torch.cuda.is_available(), "device": plan.device, "dtype": plan.dtype}
    if torch.cuda.is_available():
        env |= {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return env


def build(run: Run) -> dict:
    """Checkpoints from configs: the measured shapes and the tiny parity models."""
    from benchmarks.generation_models import build_gpt2_small
    from tritonize.converters.encoders.tiny import build_random_bert
    from tritonize.converters.generation.tiny import build_tiny_gpt2, build_tiny_t5
    from tritonize.converters.speech.tiny import build_tiny_vits

    p, w = run.plan, run.work
    words = [" ".join(WORDS[i : i + 8]) for i in range(0, len(WORDS), 8)]
    return {
        "encoder": build_random_bert(w / "encoder", p.encoder_size, "embedding", words),
        "gpt2": build_gpt2_small(w / "gpt2") if p.gpt2_size == "small" else build_tiny_gpt2(w / "gpt2"),
        "voice": build_tiny_vits(w / "voice", mms_size=p.vits_size == "mms"),
        "parity": {"embedder": build_random_bert(w / "tiny-embedder", "tiny", "embedding", words),
                   "classifier": build_random_bert(w / "tiny-classifier", "tiny", "classification", words),
                   "gpt2": build_tiny_gpt2(w / "tiny-gpt2"), "t5": build_tiny_t5(w / "tiny-t5"), "voice": build_tiny_vits(w / "tiny-voice")},
    }


def convert(run: Run, ck: dict) -> dict:
    """The served repository (PyTorch engine on the plan's device and dtype) and the parity models' folders."""
    from tritonize.planner.systems import Variant, apply_variant, read_config
    from tritonize.converters.device import Placement
    from tritonize.converters.encoders.weights import convert_bert_torch
    from tritonize.contract.generation import Limits
    from tritonize.converters.generation.weights import convert_generator_torch
    from tritonize.converters.repository import Batching, render
    from tritonize.converters.speech.weights import convert_tts_torch

    p, repo, quiet = run.plan, run.work / "repository", (lambda msg: None)
    target = Placement(p.device, p.dtype)
    batching = Batching(max_batch_size=p.max_batch_size, max_queue_size=4096)
    for name in ("encoder", "encoder-nobatch"):
        convert_bert_torch(str(ck["encoder"]), "embedding", repo, name, target, batching, log=quiet)
    for step in ("encoder-nobatch_tokenizer", "encoder-nobatch_model", "encoder-nobatch_postprocess"):
        path = repo / step / "config.pbtxt"  # batching off: Triton runs every request on its own
        path.write_text(render(apply_variant(read_config(path), Variant(dynamic_batching=False))))
    top = max(p.streams)
    convert_generator_torch("gpt2", str(ck["gpt2"]), repo, "gpt2", Limits(max_new_tokens=256, max_sequences=top, max_queue=4 * top),
                            target, log=quiet)
    convert_tts_torch(str(ck["voice"]), repo, "voice", target, Batching(max_batch_size=16), log=quiet)
    shutil.rmtree(repo / "voice_stream")  # measured: the one-shot ensemble; the stream step would hold a second copy of the voice
    # The parity models: stored weights only (the engines load them in process in every dtype).
    parity_repo, folders = run.work / "parity", {}
    cpu = Placement("cpu")
    for key, fn in (("embedder", lambda c: convert_bert_torch(str(c), "embedding", parity_repo, "embedder", cpu, log=quiet)),
                    ("classifier", lambda c: convert_bert_torch(str(c), "classification", parity_repo, "classifier", cpu, log=quiet)),
                    ("gpt2", lambda c: convert_generator_torch("gpt2", str(c), parity_repo, "gpt2", None, cpu, log=quiet)),
                    ("t5", lambda c: convert_generator_torch("t5", str(c), parity_repo, "t5", None, cpu, log=quiet)),
                    ("voice", lambda c: convert_tts_torch(str(c), parity_repo, "voice", cpu, log=quiet))):
        fn(ck["parity"][key])
        folders[key] = parity_repo / (key if key in ("gpt2", "t5") else f"{key}_model") / "1"
    return {"repository": repo, "parity_folders": folders}


def in_process(run: Run, ck: dict, conv: dict) -> dict:
    from transformers import AutoTokenizer

    from tritonize.runtime.encoders.encoder import load_engine
    from tritonize.runtime.engines import EngineSpec

    p = run.plan
    engine = load_engine(conv["repository"] / "encoder_model" / "1", "last_hidden_state", EngineSpec("torch", p.device, p.dtype))
    vocab = (len(AutoTokenizer.from_pretrained(ck["encoder"])) // 4, len(AutoTokenizer.from_pretrained(ck["encoder"])))
    rows = m.engine_throughput(engine, p.seq_len, list(p.batch_sizes), p.seconds / 2, vocab)
    memory = m.device_memory(p.device)
    del engine
    m._free()
    return {"throughput": rows, "memory": memory}


def served(run: Run, ck: dict, conv: dict) -> dict:
    from transformers import AutoTokenizer

    from benchmarks.generation_models import prompts, stream_load
    from tritonize.server import ServerConfig, TritonServer

    p, out = run.plan, {}
    texts = fixed_tokens(AutoTokenizer.from_pretrained(ck["encoder"]), p.seq_len, 64)
    config = ServerConfig(conv["repository"], http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=300,
                          log_file=run.out / "tritonserver.log")
    with TritonServer(config) as server:
        rows = []
        for model, label in (("encoder", "on"), ("encoder-nobatch", "off")):
            rows += m.encoder_served(server.grpc_url, server.http_url, model, label, texts, list(p.concurrency), p.seconds)
        out["encoder"] = rows
        out["memory_while_serving"] = m.device_memory(p.device)
        out["gpt2"] = [stream_load(server.grpc_url, "gpt2", prompts(32), n, p.requests_per_stream, p.new_tokens) for n in p.streams]
        out["vits"] = m.speech_served(server.grpc_url, "voice", VITS_TEXT, _rate(ck["voice"]), [tuple(s) for s in p.speech])
    return out


def _rate(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "config.json").read_text())["sampling_rate"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, float32, short windows (CI)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results/gpu_check")))
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="served precision (default float16; dry run float32)")
    ap.add_argument("--seconds", type=float, help="seconds per measured point")
    ap.add_argument("--work", type=Path, help="where models are built (default: a temporary folder)")
    args = ap.parse_args(argv)
    plan = DRY_RUN if args.dry_run else Plan()
    plan = replace(plan, **{k: v for k, v in (("dtype", args.dtype), ("seconds", args.seconds)) if v is not None})
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tritonize-gpu-check-") as tmp:
        run = Run(plan, args.out.resolve(), (args.work or Path(tmp)).resolve())
        run.section("environment", lambda: environment(plan))
        if plan.device == "cuda" and not run.results.get("environment", {}).get("cuda_available"):
            raise SystemExit("gpu_check: no CUDA device is visible; run with --dry-run on a machine without a GPU")
        run.section("build", lambda: build(run))
        ck = run.results.pop("build", None)
        if ck:
            run.section("convert", lambda: convert(run, ck))
            conv = run.results.pop("convert", None)
            if conv:
                run.section("parity", lambda: m.parity(conv["parity_folders"], ck["parity"], plan.device, list(plan.parity_dtypes),
                                                       ["hello world", "the quick brown fox jumps over the lazy dog", "batch queue latency"]))
                run.section("in_process", lambda: in_process(run, ck, conv))
                run.section("hf_generate", lambda: m.hf_generate(ck["gpt2"], _prompt_texts(), plan.new_tokens, plan.device, plan.dtype,
                                                                 4, max(plan.streams)))
                run.section("served", lambda: served(run, ck, conv))
    report = {"plan": asdict(plan), "results": run.results, "errors": run.errors, "ratios": ratios(run.results, plan),
              "seconds": round(time.monotonic() - run.started, 1), "dry_run": args.dry_run}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text, flush=True)
    return report


def _prompt_texts() -> list[str]:
    from benchmarks.generation_models import prompts

    return prompts(32)


if __name__ == "__main__":
    main()
