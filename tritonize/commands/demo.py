"""`tritonize demo`: convert the default models, serve them on the embedded server, call them, load-test
the embedder, stop.

The steps: each family's `DemoStep` in the registry's order (`tritonize.families`), then the load test.
A second run reuses the converted models (the converters skip a model whose source and options have not
changed).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tritonize.server import ServerConfig, ServerStartError, TritonServer
from tritonize.commands import load
from tritonize.commands.conversion import Verbose, run_conversion
from tritonize.commands.demo_steps import DemoStep
from tritonize.console import console, err
from tritonize.families import FAMILIES
from tritonize.options import Repository


def steps() -> list[DemoStep]:
    """The families' steps, then the load test of the encoders' demo model (it converts nothing)."""
    return [family.demo_step() for family in FAMILIES] + [load.DEMO]


def demo(repository: Path = Repository, http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
         verbose: bool = Verbose,
         convert_only: bool = typer.Option(False, "--convert-only", help="Only write the demo models (the Dockerfile's build stage).")) -> None:
    """Convert, serve, call, load-test and stop: the whole path on the embedded default."""
    from tritonize.commands.serve import describe

    plan = steps()
    for step in (s for s in plan if s.convert):
        console.rule(f"convert: {step.title}")
        run_conversion(step.title, lambda: step.convert(repository), verbose)
    if convert_only:
        return
    console.rule("serve")
    server = TritonServer(ServerConfig(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port))
    try:
        with console.status("starting tritonserver ..."):
            server.start()
    except ServerStartError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)
    try:
        describe(server)
        for step in plan:
            console.rule(f"call: {step.title}")
            step.show(server)
    finally:
        with console.status("stopping tritonserver ..."):
            code = server.stop()
    console.rule()
    console.print(f"tritonserver stopped cleanly (exit code {code}); `tritonize serve` keeps it running.")
