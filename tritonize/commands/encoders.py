"""`tritonize convert bert` and `tritonize infer embed|classify|rerank`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from tritonize.commands.conversion import Verbose, fail, run_conversion
from tritonize.commands.demo_steps import DemoStep
from tritonize.commands.rerank import rerank
from tritonize.console import console
from tritonize.families import ENCODERS, Family
from tritonize.options import Device, Dtype, Protocol, Repository, Url, placement


def convert_bert(
    model: str = typer.Option(..., "--model", "-m", help="Local folder or hub id (all-MiniLM-L6-v2 ships in a package)."),
    task: str = typer.Option("embedding", help="embedding, classification or rerank (a cross-encoder: one relevance logit)."),
    name: str = typer.Option(None, help="Served model name (default: from the checkpoint)."),
    repository: Path = Repository,
    optimize: bool = typer.Option(True, help="Apply ONNX Runtime's transformer fusions."),
    quantize: bool = typer.Option(False, help="int8 (ONNX Runtime CPU): calibrated, checked against fp32 on held-out texts; "
                                  "stops below the floor (embedding: min cosine 0.98, mean 0.995)."),
    quantization: str = typer.Option("dynamic", help="With --quantize: dynamic (activation ranges per call; measured faster "
                                     "and closer to fp32 on all-MiniLM-L6-v2) or static (ranges fixed by calibration, QDQ)."),
    calibration_texts: Path = typer.Option(None, help="With --quantize: a UTF-8 file, one text per line, like the texts you "
                                           "will serve (default: ~300 shipped sentences)."),
    flavour: str = typer.Option(None, help="fused (default on CPU: one Python-backend step), python (three-step ensemble; the "
                                "default with --device) or native (onnxruntime/TensorRT backend, GPU container)."),
    engine: str = typer.Option("onnxruntime", help="With --flavour native: onnxruntime (TensorRT EP, nothing to build) or tensorrt "
                               "(a plan with one profile per length bucket, built on the serving GPU by `serve --engine-cache`)."),
    precision: str = typer.Option("fp16", help="With --engine tensorrt: fp16 (checked against fp32 on CPU) or fp32."),
    max_batch_size: int = typer.Option(64, help="Rows per request and per model execution."),
    max_queue_delay_us: int = typer.Option(0, help="Dynamic batcher delay; 0 still batches whatever queued."),
    preferred_batch_size: List[int] = typer.Option([], help="Preferred batch sizes (repeatable)."),
    max_queue_size: int = typer.Option(0, help="Requests queued at the pipeline's first step beyond this are rejected (0: no bound). "
                                                 "A bound costs Triton's batch prefetching: see docs/reliability.md."),
    queue_timeout_us: int = typer.Option(0, help="Reject requests queued at the first step longer than this (0: never)."),
    instances: int = typer.Option(1, help="Model step instances."),
    threads: int = typer.Option(0, help="ONNX Runtime (or PyTorch CPU) threads per instance (0: one per core)."),
    device: str = Device,
    dtype: str = Dtype,
    max_documents: int = typer.Option(1000, min=1, help="With --task rerank: documents per request; more are refused naming the "
                                      "limit (the max_documents config parameter)."),
    force: bool = typer.Option(False, help="Convert again even if the repository has this model."),
    verbose: bool = Verbose,
) -> None:
    """Export a BERT-family checkpoint and write its Triton ensemble (ONNX Runtime, or --device for PyTorch)."""
    from tritonize.converters.repository import Batching

    target = placement(device, dtype)
    flavour = flavour or ("python" if target.torch else "fused")
    if (calibration_texts or quantization != "dynamic") and not quantize:
        raise fail("--quantization and --calibration-texts apply to int8: add --quantize")
    batching = Batching(
        max_batch_size, preferred_batch_size, max_queue_delay_us, max_queue_size, queue_timeout_us, instances, threads
    )
    if target.torch and (quantize or flavour != "python"):
        raise fail("--device selects the PyTorch engine (python flavour, no --quantize); leave it out for ONNX Runtime")
    if quantize:
        name = int8_name(model, name, repository, force)
    convert = ENCODERS.converter(torch=target.torch)
    if task == "rerank":  # a cross-encoder: converters/encoders/rerank.py
        from tritonize.converters.encoders.rerank import convert_rerank

        if target.torch or quantize or engine != "onnxruntime":
            raise fail("--task rerank serves the fp32 ONNX Runtime graph as one fused step: leave out --device, --quantize and --engine")

        def run():
            return convert_rerank(model, repository, name, optimize, batching, flavour, force=force, log=console.print,
                                  max_documents=max_documents)
    elif target.torch:
        def run():
            return convert(model, task, repository, name, target, batching, force=force, log=console.print)
    else:
        from tritonize.converters.encoders.calibration import CalibrationTextsError, text_sets
        from tritonize.converters.encoders.quantize import Int8Options

        try:
            int8 = Int8Options(quantization, calibration_texts)
            if quantize:
                text_sets(calibration_texts)  # a bad file is refused here, with its reason, before any work
        except (ValueError, CalibrationTextsError) as exc:
            raise fail(str(exc)) from None

        def run():
            return convert(model, task, repository, name, optimize, quantize, batching, flavour, force=force, log=console.print,
                           engine=engine, precision=precision, int8=int8)
    report = run_conversion(model, run, verbose)
    if verbose:
        console.print_json(data=dict(report.__dict__))


def int8_name(model: str, name: str | None, repository: Path, force: bool) -> str:
    """An int8 conversion's served name: NAME-int8 beside the checkpoint's fp32 NAME unless --name says
    otherwise; a --name that holds an fp32 conversion is refused (unless --force), never replaced."""
    from tritonize.contract.files import read_manifest
    from tritonize.converters.checkpoints import default_name

    if name is None:
        name = f"{default_name(model)[:59].rstrip('-')}-int8"
        console.print(f"int8: serving it as {name}, beside the fp32 {default_name(model)} (--name chooses another name)")
    previous = read_manifest(repository, name)
    if previous and not previous.get("report", {}).get("quantized", True) and not force:
        raise fail(f"--name {name}: {repository / name} holds an fp32 conversion that --quantize would replace; "
                   f"choose another --name (default: {default_name(model)[:59].rstrip('-')}-int8) or add --force")
    return name


def _call(url: str | None, protocol: str, fn):
    """Run fn(client); a failed call prints Triton's message and exits 1."""
    from tritonize.client import Client, TritonizeError

    try:
        with Client(url, protocol) as c:
            return fn(c)
    except TritonizeError as exc:
        raise fail(str(exc)) from None


def embed(
    model: str = typer.Argument(..., help="Served embedding pipeline."),
    texts: List[str] = typer.Argument(..., help="Texts to embed."),
    url: str = Url,
    protocol: str = Protocol,
    prompt_name: Optional[str] = typer.Option(None, help="One of the checkpoint's prompts (e.g. query) instead of its default."),
    dimensions: Optional[int] = typer.Option(None, help="Keep the first N dimensions (Matryoshka), re-normalised."),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize", help="--no-normalize: the raw pooled vector."),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate", help="--no-truncate: refuse a text over the token limit."),
) -> None:
    """Print the embedding of each text (first values) and their cosine similarities."""
    options = {"prompt_name": prompt_name, "dimensions": dimensions, "normalize": normalize, "truncate": truncate}
    e = _call(url, protocol, lambda c: c.embed(texts, model=model, **options))
    for t, row in zip(texts, e):
        console.print(f"{t[:60]!r:64} [{', '.join(f'{x:+.3f}' for x in row[:4])}, ...] ({len(row)} dims)")
    if len(texts) > 1:
        unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)  # cosines whether or not the rows are normalised
        console.print("cosine similarity:")
        for i, row in enumerate(unit @ unit.T):
            console.print("  " + " ".join(f"{x:6.3f}" for x in row) + f"  {texts[i][:40]!r}")


def classify(
    model: str = typer.Argument(..., help="Served classification pipeline."),
    texts: List[str] = typer.Argument(..., help="Texts to classify."),
    url: str = Url,
    protocol: str = Protocol,
) -> None:
    """Print the predicted label and its probability for each text."""
    preds = _call(url, protocol, lambda c: c.classify(texts, model=model))
    for t, p in zip(texts, preds):
        console.print(f"{t[:60]!r:64} {p.label} ({p.score:.3f})")


def register(convert_app: typer.Typer, infer_app: typer.Typer, family: Family) -> None:
    for alias in family.aliases:
        convert_app.command(alias)(convert_bert)
    infer_app.command("embed")(embed)
    infer_app.command("classify")(classify)
    infer_app.command("rerank")(rerank)


# -- demo ------------------------------------------------------------------------------------------
DEMO_MODEL = "all-minilm-l6-v2"
DEMO_QUERY = "How do I keep latency low under load?"
DEMO_DOCS = [
    "Dynamic batching groups concurrent requests so the GPU does more work per call.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Set a latency budget, measure p99, and add replicas before the queue grows.",
    "The football match ended in a draw after extra time.",
]


def _demo_convert(repository: Path) -> None:
    ENCODERS.converter()("sentence-transformers/all-MiniLM-L6-v2", "embedding", repository, DEMO_MODEL, log=console.print)


def _demo_show(server) -> None:
    from tritonize.client import Client

    with Client(server.grpc_url) as c:
        q, docs = c.embed([DEMO_QUERY], model=DEMO_MODEL)[0], c.embed(DEMO_DOCS, model=DEMO_MODEL)
    console.print(f"semantic search with {DEMO_MODEL} over gRPC, query: {DEMO_QUERY!r}")
    for score, doc in sorted(zip(docs @ q, DEMO_DOCS), reverse=True):
        console.print(f"  {score:6.3f}  {doc}")


DEMO = DemoStep("all-MiniLM-L6-v2 sentence embeddings", _demo_convert, _demo_show)
