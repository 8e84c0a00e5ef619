"""Command-line options shared by several subcommands (one definition, one default)."""

from pathlib import Path

import typer

DEFAULT_REPOSITORY = Path("model_repository")

Repository = typer.Option(DEFAULT_REPOSITORY, "--repository", "-r", help="Triton model repository folder.")
Url = typer.Option(None, "--url", help="host:port of the server (default: 127.0.0.1:8001 for gRPC, :8000 for HTTP).")
Protocol = typer.Option("grpc", "--protocol", help="grpc or http.")
Device = typer.Option(None, "--device", help="Run the model step on the PyTorch engine on cpu or cuda (default: ONNX Runtime on CPU).")
Dtype = typer.Option("float32", "--dtype", help="PyTorch engine precision: float32, float16 or bfloat16.")


def placement(device: str | None, dtype: str):
    """The checked Placement, or a red error naming the option and exit 1."""
    from tritonize.console import err
    from tritonize.converters.device import DeviceError, Placement

    try:
        p = Placement(device, dtype)
        p.check_available()
    except DeviceError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)
    return p
