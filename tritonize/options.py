"""Command-line options shared by several subcommands (one definition, one default)."""

from pathlib import Path

import typer

DEFAULT_REPOSITORY = Path("model_repository")

Repository = typer.Option(DEFAULT_REPOSITORY, "--repository", "-r", help="Triton model repository folder.")
Url = typer.Option(None, "--url", help="host:port of the server (default: 127.0.0.1:8001 for gRPC, :8000 for HTTP).")
Protocol = typer.Option("grpc", "--protocol", help="grpc or http.")
