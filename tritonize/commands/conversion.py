"""What every `convert` subcommand and the demo's conversions share: progress lines in the terminal,
the libraries' warnings in a log file (unless --verbose), and a failure told in one paragraph."""

from __future__ import annotations

import re
from typing import Callable, TypeVar

import typer
from rich.markup import escape

from tritonize.console import console, err

T = TypeVar("T")

Verbose = typer.Option(False, "--verbose", "-v", help="Show the libraries' warnings and logs instead of keeping them in a log file.")


def one_line(text: str, limit: int = 600) -> str:
    """Whitespace collapsed and cut to `limit` characters: an error message fit for one paragraph."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(message: str) -> typer.Exit:
    """Print a one-paragraph error (markup-safe: messages hold brackets such as '(0, 10]') and exit 1."""
    err.print(f"[red]{escape(one_line(message))}[/red]", soft_wrap=True)  # the terminal wraps: paths stay whole
    return typer.Exit(1)


def run_conversion(label: str, convert: Callable[[], T], verbose: bool = False) -> T:
    """Run `convert` (which prints its own progress lines); on failure exit 1 with the reason."""
    from tritonize.converters.quiet import library_output, log_path

    path = log_path(label.rstrip("/").rsplit("/", 1)[-1])
    try:
        with console.status(f"converting {label} ..."), library_output(path, verbose):
            result = convert()
    except Exception as exc:
        reason = one_line(str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}").rstrip(".")
        if verbose:
            console.print_exception()
        where = "" if verbose else f" Details and library messages: {path}"
        raise fail(f"Conversion of {label} failed: {reason}.{where}") from None
    if not verbose and path.exists() and path.stat().st_size:
        console.print(f"[dim]library warnings and logs: {escape(str(path))} (--verbose shows them here)[/dim]", soft_wrap=True)
    return result
