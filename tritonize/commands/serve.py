"""`tritonize serve`: run the real tritonserver in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from tritonize.server import ServerConfig, ServerStartError, TritonServer
from tritonize.console import console, err
from tritonize.options import Repository


def serve(
    repository: Path = Repository,
    host: str = typer.Option("127.0.0.1", help="Address to bind HTTP, gRPC and metrics to."),
    http_port: int = typer.Option(8000, help="HTTP port (0: pick a free one)."),
    grpc_port: int = typer.Option(8001, help="gRPC port (0: pick a free one)."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (0: pick a free one)."),
    binary: str = typer.Option("auto", help="auto, embedded (the nvidia-pytriton binary) or path (tritonserver on PATH)."),
    log_file: Path = typer.Option(None, help="Server log file (default: a temporary file, printed at start)."),
    startup_timeout: float = typer.Option(180.0, help="Seconds to wait for the server to become ready."),
    exit_timeout: int = typer.Option(30, help="Seconds in-flight requests may run on after SIGTERM."),
    http_max_input_size: int = typer.Option(None, help="Largest HTTP request body in bytes (Triton >= 2.59; not the embedded binary)."),
    engine_cache: Path = typer.Option(None, help="Build the repository's missing TensorRT engines on this GPU first, cached in this folder."),
) -> None:
    """Serve a model repository with the real Triton server until Ctrl-C or SIGTERM."""
    if engine_cache:
        _prepare_engines(repository, engine_cache)
    config = ServerConfig(
        repository, host, http_port, grpc_port, metrics_port, binary, log_file,
        startup_timeout_s=startup_timeout, exit_timeout_s=exit_timeout, http_max_input_size=http_max_input_size,
    )
    server = TritonServer(config)
    with console.status(f"starting tritonserver on {repository} ..."):
        try:
            server.start()
        except ServerStartError as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(1)
    describe(server)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if server.process.poll() is not None:
            err.print(f"[red]tritonserver exited with code {server.process.returncode}[/red]\n{server.log_tail()}")
            raise typer.Exit(1)
    with console.status("stopping: in-flight requests finish first ..."):
        code = server.stop()
    console.print(f"tritonserver stopped (exit code {code})")


def _prepare_engines(repository: Path, cache: Path) -> None:
    """TensorRT plans are GPU-specific, so they are built where they run (a no-op without tensorrt_plan steps)."""
    from tritonize.converters.encoders.tensorrt import EngineBuildError, prepare_engines

    try:
        prepare_engines(repository, cache, log=console.print)
    except EngineBuildError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)


def describe(server: TritonServer) -> None:
    console.print(f"[green]tritonserver ready[/green] ({server.binary.kind} binary)")
    console.print(f"  gRPC     {server.grpc_url}")
    console.print(f"  HTTP     http://{server.http_url}")
    console.print(f"  metrics  {server.metrics_url}")
    console.print(f"  log      {server.log_file}")
    console.print(f"  admin    restricted APIs need header {next(iter(server.restricted_headers('http')))}: {server.config.restricted_key}")
