"""`tritonize convert tts` and `tritonize infer tts`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from tritonize.commands.conversion import Verbose, fail, run_conversion
from tritonize.commands.demo_steps import DemoStep
from tritonize.console import console
from tritonize.families import SPEECH, Family
from tritonize.options import Device, Dtype, Repository, Url, placement


def convert_tts(
    model: str = typer.Option(..., "--model", "-m", help="Local folder or hub id of a VITS voice (e.g. facebook/mms-tts-eng)."),
    name: str = typer.Option(None, help="Served voice name (default: from the checkpoint)."),
    repository: Path = Repository,
    max_batch_size: int = typer.Option(16, help="Requests per model-step execution."),
    threads: int = typer.Option(0, help="ONNX Runtime threads (0: one per core)."),
    max_audio_seconds: float = typer.Option(600.0, help="The longest audio one request may get (a request may ask for less)."),
    device: str = Device,
    dtype: str = Dtype,
    force: bool = typer.Option(False, help="Convert again even if the repository has this voice."),
    verbose: bool = Verbose,
) -> None:
    """Export a VITS voice (ONNX, or --device for PyTorch) and write its speech pipeline (one-shot ensemble + streaming model)."""
    from tritonize.converters.repository import Batching
    from tritonize.converters.speech.repository import SpeechLimits

    if not max_audio_seconds > 0:
        raise fail(f"--max-audio-seconds must be > 0, got {max_audio_seconds:g}")
    target = placement(device, dtype)
    batching, limits = Batching(max_batch_size=max_batch_size, intra_op_threads=threads), SpeechLimits(max_audio_seconds=max_audio_seconds)
    convert = SPEECH.converter(torch=target.torch)
    if target.torch:
        def run():
            return convert(model, repository, name, target, batching, limits=limits, force=force, log=console.print)
    else:
        def run():
            return convert(model, repository, name, batching, limits=limits, force=force, log=console.print)
    report = run_conversion(model, run, verbose)
    if verbose:
        console.print_json(data=report.__dict__)


def infer_tts(
    model: str = typer.Argument(..., help="Served voice."),
    text: str = typer.Argument(..., help="Text to speak."),
    out: Path = typer.Option(Path("speech.wav"), "--out", "-o", help="WAV file to write."),
    stream: bool = typer.Option(False, help="Sentence by sentence from the streaming model (gRPC)."),
    speaking_rate: float = typer.Option(None, help="In (0, 10]; > 1 speaks faster (default: the voice's own)."),
    seed: int = typer.Option(0, help="Same seed, same waveform."),
    max_audio_seconds: float = typer.Option(None, help="Refuse audio longer than this (default and most: the voice's limit)."),
    url: str = Url,
) -> None:
    """Synthesize speech and write it as a WAV file."""
    import numpy as np

    from tritonize.client import Audio, SpeechClient, TritonizeError

    # None means "not given" (the voice's default); any given value, 0 included, goes to the server's check.
    given = {"speaking_rate": speaking_rate, "max_audio_seconds": max_audio_seconds}
    params = {"seed": seed, **{k: v for k, v in given.items() if v is not None}}
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
        raise fail(str(exc)) from None
    audio.to_wav(out)
    console.print(f"wrote {out}: {audio.seconds:.2f} s at {audio.rate} Hz in {time.perf_counter() - start:.2f} s")


def register(convert_app: typer.Typer, infer_app: typer.Typer, family: Family) -> None:
    for alias in family.aliases:
        convert_app.command(alias)(convert_tts)
    infer_app.command("tts")(infer_tts)


# -- demo ------------------------------------------------------------------------------------------
DEMO_VOICE = "demo-vits"
DEMO_TEXT = "Hello from Triton. This voice has random weights, so expect noise, not words!"


def _demo_convert(repository: Path) -> None:
    from tritonize.converters.speech.tiny import build_tiny_vits

    checkpoint = Path(".tritonize/checkpoints") / DEMO_VOICE
    if not (checkpoint / "config.json").exists():  # built once, so a second demo reuses the conversion
        build_tiny_vits(checkpoint)
    SPEECH.converter()(str(checkpoint), repository, DEMO_VOICE, log=console.print)


def _demo_show(server) -> None:
    from tritonize.client import SpeechClient

    out = Path("demo_speech.wav").resolve()
    with SpeechClient(server.grpc_url) as c:
        audio = c.synthesize(DEMO_TEXT, model=DEMO_VOICE, seed=1)
    audio.to_wav(out)
    console.print(f"speech from {DEMO_VOICE} (a tiny VITS built locally with random weights: nothing downloads): "
                  f"{audio.seconds:.2f} s at {audio.rate} Hz written to {out}")


DEMO = DemoStep("VITS text to speech (tiny local voice)", _demo_convert, _demo_show)
