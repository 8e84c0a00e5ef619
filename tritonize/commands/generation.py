"""`tritonize convert gpt2|t5` and `tritonize infer generate|gpt2|t5` (text generation, streamed)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from tritonize.commands.conversion import Verbose, fail, run_conversion
from tritonize.commands.demo_steps import DemoStep
from tritonize.console import console
from tritonize.families import GENERATION, Family
from tritonize.options import Device, Dtype, Repository, Url, placement


def _limits(max_new_tokens: int, default_max_new_tokens: int, max_sequences: int, max_queue: int, threads: int):
    from tritonize.contract.generation import Limits

    return Limits(max_new_tokens, default_max_new_tokens, max_sequences, max_queue, intra_op_threads=threads)


def _convert(alias: str):
    def command(
        model: str = typer.Option(..., "--model", "-m", help="Local folder or hub id."),
        name: str = typer.Option(None, help="Served model name (default: from the checkpoint)."),
        repository: Path = Repository,
        max_new_tokens: int = typer.Option(512, help="Largest max_new_tokens a request may ask for (GPT-2: capped by the context)."),
        default_max_new_tokens: int = typer.Option(32, help="max_new_tokens when a request does not say."),
        max_sequences: int = typer.Option(16, help="Sequences generated together (the running batch)."),
        max_queue: int = typer.Option(64, help="Requests waiting for a slot; beyond it requests get an 'overloaded' error."),
        threads: int = typer.Option(0, help="ONNX Runtime (or PyTorch CPU) threads (0: one per core)."),
        device: str = Device,
        dtype: str = Dtype,
        force: bool = typer.Option(False, help="Convert again even if the repository has this model."),
        verbose: bool = Verbose,
    ) -> None:
        target = placement(device, dtype)
        if target.torch:
            from functools import partial

            convert = partial(GENERATION.converter(torch=True), alias, placement=target)
        else:
            convert = GENERATION.converter(alias)
        limits = _limits(max_new_tokens, default_max_new_tokens, max_sequences, max_queue, threads)
        report = run_conversion(model, lambda: convert(model, repository, name, limits, force=force, log=console.print), verbose)
        if verbose:
            console.print_json(data=dict(report.__dict__))

    command.__doc__ = f"Export a {'GPT-2' if alias == 'gpt2' else 'T5'} checkpoint with its KV cache and write a streaming generator."
    return command


def run_generation(url: str | None, model: str, prompt: str, stream: bool, params: dict) -> None:
    from tritonize.client import GenerationClient, TritonizeError

    try:
        with GenerationClient(url) as c:
            if stream:
                reason = None
                for chunk in c.stream_chunks(prompt, model=model, **params):
                    console.out(chunk.text, end="", highlight=False)
                    reason = chunk.finish_reason or reason
                console.out("")
                console.print(f"[dim]finish reason: {reason}[/dim]")
            else:
                result = c.generate_chunk(prompt, model=model, **params)
                console.out(result.text, highlight=False)
                console.print(f"[dim]{len(result.token_ids)} tokens, finish reason: {result.finish_reason}[/dim]")
    except TritonizeError as exc:
        raise fail(str(exc)) from None


def _infer(default_model: str | None):
    def command(
        prompt: str = typer.Argument(..., help="The prompt."),
        model: str = typer.Option(default_model, "--model", "-m", help="Served generator."),
        stream: bool = typer.Option(False, "--stream", help="Print text as the tokens arrive."),
        max_new_tokens: int = typer.Option(None, help="New tokens at most (default: the model's default)."),
        temperature: float = typer.Option(None, help="0 (default) is greedy; > 0 samples."),
        top_k: int = typer.Option(None, help="Sample from the k most likely tokens (0: off)."),
        top_p: float = typer.Option(None, help="Sample from the smallest set reaching this probability (1: off)."),
        repetition_penalty: float = typer.Option(None, help="> 1 discourages repeating tokens."),
        seed: int = typer.Option(None, help="Seed for reproducible sampling."),
        stop: List[str] = typer.Option([], help="Stop before this string (repeatable)."),
        url: str = Url,
    ) -> None:
        params = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, seed=seed, stop=stop or None)
        run_generation(url, model, prompt, stream, {k: v for k, v in params.items() if v is not None})

    command.__doc__ = "Generate text from a prompt (gRPC; --stream prints pieces as they arrive)."
    return command


def generate(
    model: str = typer.Argument(..., help="Served generator."),
    prompt: str = typer.Argument(..., help="The prompt."),
    stream: bool = typer.Option(False, "--stream", help="Print text as the tokens arrive."),
    max_new_tokens: int = typer.Option(None, help="New tokens at most."),
    temperature: float = typer.Option(None, help="0 (default) is greedy."),
    seed: int = typer.Option(None, help="Seed for reproducible sampling."),
    url: str = Url,
) -> None:
    """Generate text with any served generator: `tritonize infer generate MODEL PROMPT`."""
    params = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    run_generation(url, model, prompt, stream, {k: v for k, v in params.items() if v is not None})


def register(convert_app: typer.Typer, infer_app: typer.Typer, family: Family) -> None:
    for alias in family.aliases:
        convert_app.command(alias)(_convert(alias))
    infer_app.command("generate")(generate)
    for alias in family.aliases:  # `tritonize infer gpt2 "prompt" --stream`
        infer_app.command(alias)(_infer(alias))


# -- demo ------------------------------------------------------------------------------------------
DEMO_GPT2, DEMO_T5 = "gpt2-tiny-demo", "t5-tiny-demo"
DEMO_CHECKPOINTS = Path.home() / ".cache" / "tritonize" / "demo-checkpoints"


def _demo_convert(repository: Path) -> None:
    from tritonize.contract.generation import Limits
    from tritonize.converters.generation.tiny import build_tiny_gpt2, build_tiny_t5

    console.print("[yellow]tiny GPT-2 and T5 with random weights, built locally (nothing may download): "
                  "the text is gibberish; what the demo shows is the served path (KV cache, streaming, batching).[/yellow]")
    for name, build in (("tiny-gpt2", build_tiny_gpt2), ("tiny-t5", build_tiny_t5)):
        if not (DEMO_CHECKPOINTS / name / "config.json").exists():  # built once, so a second demo reuses the conversion
            build(DEMO_CHECKPOINTS / name)
    limits = Limits(max_new_tokens=128)
    for alias, name in (("gpt2", DEMO_GPT2), ("t5", DEMO_T5)):
        GENERATION.converter(alias)(str(DEMO_CHECKPOINTS / f"tiny-{alias}"), repository, name, limits, log=console.print)


def _demo_show(server) -> None:
    from tritonize.client import GenerationClient

    prompt = "the quick brown fox"
    with GenerationClient(server.grpc_url) as c:
        console.print(f"{DEMO_GPT2}, streamed over gRPC, prompt {prompt!r}:")
        pieces = 0
        for piece in c.stream(prompt, model=DEMO_GPT2, max_new_tokens=24, temperature=0.8, seed=1):
            console.out(piece, end="", highlight=False)
            pieces += 1
        console.out("")
        console.print(f"[dim]({pieces} pieces, each its own gRPC response)[/dim]")
        result = c.generate_chunk("translate: the server stays ready", model=DEMO_T5, max_new_tokens=16)
        console.print(f"{DEMO_T5}, greedy, whole text: {result.text!r} ({len(result.token_ids)} tokens, {result.finish_reason})")


DEMO = DemoStep("GPT-2 (streamed) and T5 generation, tiny random models", _demo_convert, _demo_show)
