"""`tritonize infer rerank`: a query and documents to a served cross-encoder (`convert bert --task rerank`)."""

from __future__ import annotations

from typing import List

import typer

from tritonize.commands.conversion import fail
from tritonize.console import console
from tritonize.options import Protocol, Url


def rerank(
    model: str = typer.Argument(..., help="Served rerank pipeline."),
    query: str = typer.Argument(..., help="The query."),
    documents: List[str] = typer.Argument(..., help="Documents to rank against the query."),
    top_n: int = typer.Option(None, "--top-n", min=1, help="Print only the N most relevant (default: all)."),
    url: str = Url,
    protocol: str = Protocol,
) -> None:
    """Print the documents by descending relevance to the query, with their scores."""
    from tritonize.client import Client, TritonizeError

    try:
        with Client(url, protocol) as c:
            ranked = c.rerank(query, documents, model=model, top_n=top_n)
    except TritonizeError as exc:
        raise fail(str(exc)) from None
    for r in ranked:
        console.print(f"{r.score:9.4f}  [{r.index}] {str(r.document)[:70]!r}")
