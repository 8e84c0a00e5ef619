"""`tritonize serve`: run the real tritonserver in the foreground, supervised, until SIGINT/SIGTERM.

Signals are handled from before the server starts, so a stop during start-up leaves nothing running.
On SIGTERM/SIGINT: readiness goes false, in-flight requests finish (ensemble steps and generation
streams included), new ones are refused, then the server stops.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from tritonize.console import console, err
from tritonize.options import Repository
from tritonize.server import ServerConfig, ServerStartError, TritonServer
from tritonize.server.health import serve_health
from tritonize.server.supervisor import Supervisor


class _Stop(Exception):
    """Raised in the main thread by a signal that arrives while the server is starting."""


def serve(
    repository: Path = Repository,
    host: str = typer.Option("127.0.0.1", help="Address to bind HTTP, gRPC, metrics and health to."),
    http_port: int = typer.Option(8000, help="HTTP port (0: pick a free one)."),
    grpc_port: int = typer.Option(8001, help="gRPC port (0: pick a free one)."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (0: pick a free one)."),
    health_port: int = typer.Option(8003, help="The supervisor's readiness/liveness endpoint, for probes (0: pick a free one)."),
    protocols: str = typer.Option("http,grpc", help="Front ends to serve: 'http,grpc' or 'grpc' (HTTP off)."),
    binary: str = typer.Option("auto", help="auto, embedded (the nvidia-pytriton binary) or path (tritonserver on PATH)."),
    allow_insecure_embedded: bool = typer.Option(
        False, help="Let the embedded 2.51 binary bind a non-loopback --host despite its known security flaws."),
    log_file: Path = typer.Option(None, help="Server log file (default: a temporary file, printed at start)."),
    startup_timeout: float = typer.Option(180.0, help="Seconds to wait for the server to become ready."),
    exit_timeout: int = typer.Option(30, help="Seconds in-flight requests may run on after SIGTERM."),
    http_max_input_size: int = typer.Option(None, help="Largest HTTP request body in bytes (Triton >= 2.59; not the embedded binary)."),
    engine_cache: Path = typer.Option(None, help="Build the repository's missing TensorRT engines on this GPU first, cached in this folder."),
) -> None:
    """Serve a model repository with the real Triton server until Ctrl-C or SIGTERM."""
    if engine_cache:
        _prepare_engines(repository, engine_cache)
    try:
        config = ServerConfig(
            repository, host, http_port, grpc_port, metrics_port, binary, log_file,
            startup_timeout_s=startup_timeout, exit_timeout_s=exit_timeout, http_max_input_size=http_max_input_size,
            protocols=tuple(p.strip() for p in protocols.split(",") if p.strip()), allow_insecure_embedded=allow_insecure_embedded,
        )
    except ValueError as e:
        err.print(f"[red]--protocols: {e}[/red]")
        raise typer.Exit(2)
    stop = threading.Event()

    def on_signal(*_) -> None:
        if not stop.is_set():
            stop.set()
            if threading.current_thread() is threading.main_thread() and starting.is_set():
                raise _Stop()

    starting = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    server = TritonServer(config)
    starting.set()
    try:
        with console.status(f"starting tritonserver on {repository} ..."):
            server.start()  # stops what it started if _Stop or an error interrupts it
    except _Stop:
        err.print("[yellow]stopped during start-up; nothing left running[/yellow]")
        raise typer.Exit(130)
    except ServerStartError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)
    finally:
        starting.clear()
    supervisor = Supervisor(server, log=lambda m: console.print(f"[yellow]supervisor:[/yellow] {m}")).start()
    health = serve_health(supervisor, host, health_port)
    describe(server, health.server_address[1])
    while not stop.wait(0.5):
        if server.process.poll() is not None:
            err.print(f"[red]tritonserver exited with code {server.process.returncode}[/red]\n{server.log_tail()}")
            health.shutdown()
            raise typer.Exit(1)
    with console.status("draining: readiness off, in-flight requests finish, new ones are refused ..."):
        code = supervisor.drain_and_stop()
    health.shutdown()
    restarts = sum(supervisor.restarts.values())
    console.print(f"tritonserver stopped (exit code {code}){f'; {restarts} step restart(s)' if restarts else ''}")


def _prepare_engines(repository: Path, cache: Path) -> None:
    """TensorRT plans are GPU-specific, so they are built where they run (a no-op without tensorrt_plan steps)."""
    from tritonize.converters.encoders.tensorrt import EngineBuildError, prepare_engines

    try:
        prepare_engines(repository, cache, log=console.print)
    except EngineBuildError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)


def describe(server: TritonServer, health_port: int | None = None) -> None:
    console.print(f"[green]tritonserver ready[/green] ({server.binary.kind} binary)")
    console.print(f"  gRPC     {server.grpc_url}")
    if "http" in server.config.protocols:
        console.print(f"  HTTP     http://{server.http_url}")
    console.print(f"  metrics  {server.metrics_url}")
    if health_port is not None:
        console.print(f"  health   http://{server.config.host}:{health_port}/v2/health/ready (the supervisor's: probe this)")
    console.print(f"  log      {server.log_file}")
    console.print(f"  admin    restricted APIs need header {next(iter(server.restricted_headers('http')))}: {server.config.restricted_key}")
