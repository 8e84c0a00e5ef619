"""`tritonize convert tts` and `tritonize infer tts`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from tritonize.commands import demo_steps
from tritonize.commands.demo_steps import DemoStep
from tritonize.console import console, err
from tritonize.options import Device, Dtype, Repository, Url, placement


def convert_tts(
    model: str = typer.Option(..., "--model", "-m", help="Local folder or hub id of a VITS voice (e.g. facebook/mms-tts-eng)."),
    name: str = typer.Option(None, help="Served voice name (default: from the checkpoint)."),
    repository: Path = Repository,
    max_batch_size: int = typer.Option(16, help="Requests per model-step execution."),
    threads: int = typer.Option(0, help="ONNX Runtime (or PyTorch CPU) threads (0: one per core)."),
    device: str = Device,
    dtype: str = Dtype,
    force: bool = typer.Option(False, help="Convert again even if the repository has this voice."),
) -> None:
    """Export a VITS voice (ONNX, or --device for PyTorch) and write its speech pipeline (one-shot ensemble + streaming model)."""
    from tritonize.converters.repository import Batching
    from tritonize.converters.speech.vits import ParityError
    from tritonize.converters.speech.vits import convert_tts as convert

    target = placement(device, dtype)
    batching = Batching(max_batch_size=max_batch_size, intra_op_threads=threads)
    try:
        with console.status(f"converting {model} ..."):
            if target.torch:
                from tritonize.converters.speech.weights import convert_tts_torch

                report = convert_tts_torch(model, repository, name, target, batching, force=force, log=console.print)
            else:
                report = convert(model, repository, name, batching, force=force, log=console.print)
    except ParityError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)
    console.print_json(data=report.__dict__)


def infer_tts(
    model: str = typer.Argument(..., help="Served voice."),
    text: str = typer.Argument(..., help="Text to speak."),
    out: Path = typer.Option(Path("speech.wav"), "--out", "-o", help="WAV file to write."),
    stream: bool = typer.Option(False, help="Sentence by sentence from the streaming model (gRPC)."),
    speaking_rate: float = typer.Option(None, help="> 1 speaks faster."),
    seed: int = typer.Option(0, help="Same seed, same waveform."),
    url: str = Url,
) -> None:
    """Synthesize speech and write it as a WAV file."""
    import numpy as np

    from tritonize.client import Audio, SpeechClient, TritonizeError

    params = {"seed": seed} | ({"speaking_rate": speaking_rate} if speaking_rate else {})
    start = time.perf_counter()
    try:
        with SpeechClient(url) as c:
            if stream:
                parts = []
                for i, a in enumerate(c.stream(text, model=model, **params)):
                    console.print(f"  sentence {i + 1}: {a.seconds:.2f} s of audio after {time.perf_counter() - start:.2f} s")
                    parts.append(a)
                audio = Audio(np.concatenate([p.samples for p in parts]), parts[0].rate)
            else:
                audio = c.synthesize(text, model=model, **params)
    except TritonizeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    audio.to_wav(out)
    console.print(f"wrote {out}: {audio.seconds:.2f} s at {audio.rate} Hz in {time.perf_counter() - start:.2f} s")


def register(convert_app: typer.Typer, infer_app: typer.Typer) -> None:
    demo_steps.add(DEMO)
    convert_app.command("tts")(convert_tts)
    infer_app.command("tts")(infer_tts)


# -- demo ------------------------------------------------------------------------------------------
DEMO_VOICE = "demo-vits"
DEMO_TEXT = "Hello from Triton. This voice has random weights, so expect noise, not words!"


def _demo_convert(repository: Path) -> None:
    from tritonize.converters.speech.vits import convert_tts as convert
    from tritonize.converters.speech.tiny import build_tiny_vits

    checkpoint = Path(".tritonize/checkpoints") / DEMO_VOICE
    if not (checkpoint / "config.json").exists():  # built once, so a second demo reuses the conversion
        build_tiny_vits(checkpoint)
    convert(str(checkpoint), repository, DEMO_VOICE, log=console.print)


def _demo_show(server) -> None:
    from tritonize.client import SpeechClient

    out = Path("demo_speech.wav").resolve()
    with SpeechClient(server.grpc_url) as c:
        audio = c.synthesize(DEMO_TEXT, model=DEMO_VOICE, seed=1)
    audio.to_wav(out)
    console.print(f"speech from {DEMO_VOICE} (a tiny VITS built locally with random weights: nothing downloads): "
                  f"{audio.seconds:.2f} s at {audio.rate} Hz written to {out}")


DEMO = DemoStep("VITS text to speech (tiny local voice)", _demo_convert, _demo_show)
