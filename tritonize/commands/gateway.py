"""`tritonize gateway`: the OpenAI-compatible HTTP API in front of a running Triton server."""

from __future__ import annotations

from pathlib import Path

import typer

from tritonize.console import console, err


def gateway(
    url: str = typer.Option("127.0.0.1:8001", "--url", help="The Triton server's gRPC host:port."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default; 0.0.0.0 exposes it)."),
    port: int = typer.Option(9000, help="HTTP port of the OpenAI API."),
    api_key_file: Path = typer.Option(None, help="File with the accepted API keys, one per line (Authorization: Bearer KEY)."),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, help="Largest request body accepted (413 beyond it)."),
    timeout: float = typer.Option(300.0, help="Seconds one Triton call may take (a whole generation)."),
) -> None:
    """Serve /v1/models, /v1/embeddings, /v1/completions, /v1/chat/completions and /v1/audio/speech."""
    from tritonize.gateway.app import GatewaySettings, serve
    from tritonize.gateway.security import load_api_keys

    try:
        keys = load_api_keys(api_key_file) if api_key_file else ()
        settings = GatewaySettings(url, host, port, keys, max_body_bytes, timeout)
    except (OSError, ValueError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2)
    console.print(f"OpenAI-compatible gateway on http://{host}:{port}/v1 -> Triton gRPC {url}")
    console.print(f"  API keys: {f'{len(keys)} from {api_key_file}' if keys else 'none (open)'}; body limit {max_body_bytes} bytes")
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        err.print("[yellow]bound beyond loopback with no API key: anyone who reaches the port can use it[/yellow]")
    serve(settings)


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
