"""`tritonize convert chatbot` and `tritonize infer chat` (the FAQ chatbot: retrieval, generation, auto)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from tritonize.commands.demo_steps import DemoStep
from tritonize.console import console, err
from tritonize.families import CHAT, Family
from tritonize.options import Repository, Url


def convert_chatbot(
    faq: Path = typer.Option(..., "--faq", help="FAQ file: JSON Lines or CSV with id, question, answer."),
    embedder: str = typer.Option(..., help="Served embedding pipeline in the repository (e.g. all-minilm-l6-v2)."),
    generator: str = typer.Option(..., help="Served generator in the repository (a GPT-2 or T5 conversion)."),
    name: str = typer.Option(None, help="Served name (default: FAQ file name + '-bot'); NAME_stream streams."),
    threshold: float = typer.Option(0.5, help="Auto mode answers from the FAQ at or above this cosine score."),
    top_k: int = typer.Option(3, help="Candidates returned, and FAQ entries given to the generator as context."),
    prompt_template: Path = typer.Option(None, help="Prompt template file with {question} and optionally {context}."),
    index: str = typer.Option("exact", help="exact (numpy, default) or faiss (HNSW, for large FAQs; needs faiss-cpu)."),
    repository: Path = Repository,
    force: bool = typer.Option(False, help="Convert again even if the repository has this chatbot."),
) -> None:
    """Embed an FAQ with a served embedder and write a chatbot (BLS model + streaming twin) that answers
    from it or falls back to a served generator."""
    from tritonize.converters.chat.embed import EmbedderError
    from tritonize.converters.chat.faq import FaqError

    convert = CHAT.converter()
    try:
        with console.status(f"converting {faq} ..."):
            report = convert(faq, embedder, generator, repository, name, threshold, top_k, prompt_template, index, force=force,
                             log=console.print)
    except (FaqError, EmbedderError, ValueError, RuntimeError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1)
    console.print_json(data=dict(report.__dict__))


def show_answer(a) -> None:
    where = "generated" if a.generated else ("no FAQ entry reached the threshold" if a.source == "no-match" else f"FAQ entry {a.source!r}")
    console.print(f"[dim]{where}, best score {a.score:.3f}; candidates: "
                  + ", ".join(f"{c.id} {c.score:.3f}" for c in a.candidates) + "[/dim]")


def chat(
    model: str = typer.Argument(..., help="Served chatbot."),
    question: str = typer.Argument(..., help="The question."),
    mode: str = typer.Option("auto", help="auto, retrieval or generative."),
    stream: bool = typer.Option(False, "--stream", help="Print a generated answer as it arrives (NAME_stream)."),
    threshold: float = typer.Option(None, help="Override the chatbot's threshold."),
    top_k: int = typer.Option(None, help="Override the chatbot's number of candidates."),
    max_new_tokens: int = typer.Option(None, help="New tokens at most when generating."),
    temperature: float = typer.Option(None, help="0 (default) is greedy."),
    seed: int = typer.Option(None, help="Seed for reproducible sampling."),
    stop: List[str] = typer.Option([], help="Stop generating before this string (repeatable)."),
    url: str = Url,
) -> None:
    """Ask a chatbot: an FAQ answer, or a generated one (gRPC)."""
    from tritonize.client import ChatClient, TritonizeError
    from tritonize.client.chat import join

    gen = {k: v for k, v in dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, stop=stop or None).items()
           if v is not None}
    try:
        with ChatClient(url) as c:
            if stream:
                pieces = []
                for piece in c.stream_answers(question, model=model, mode=mode, threshold=threshold, top_k=top_k, **gen):
                    console.out(piece.text, end="", highlight=False)
                    pieces.append(piece)
                console.out("")
                answer = join(pieces)
            else:
                answer = c.ask(question, model=model, mode=mode, threshold=threshold, top_k=top_k, **gen)
                console.out(answer.text, highlight=False)
    except TritonizeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    show_answer(answer)


def register(convert_app: typer.Typer, infer_app: typer.Typer, family: Family) -> None:
    for alias in family.aliases:
        convert_app.command(alias)(convert_chatbot)
    infer_app.command("chat")(chat)


# -- demo ------------------------------------------------------------------------------------------
DEMO_CHATBOT = "tritonize-faq"
DEMO_QUESTIONS = [
    ("auto", "What command launches Triton with my converted models?"),  # a paraphrase: answered from the FAQ
    ("auto", "What is a good recipe for banana bread?"),  # unrelated: falls back to the (tiny, random) generator
]


def _demo_convert(repository: Path) -> None:
    from tritonize.commands.encoders import DEMO_MODEL
    from tritonize.commands.generation import DEMO_GPT2
    from tritonize.converters.chat.faq import demo_faq

    CHAT.converter()(demo_faq(), DEMO_MODEL, DEMO_GPT2, repository, DEMO_CHATBOT, log=console.print)


def _demo_show(server) -> None:
    from tritonize.client import ChatClient

    with ChatClient(server.grpc_url) as c:
        for mode, question in DEMO_QUESTIONS:
            answer = c.ask(question, model=DEMO_CHATBOT, mode=mode, max_new_tokens=24)
            console.print(f"Q: {question}")
            console.out(f"A: {answer.text}", highlight=False)
            show_answer(answer)
        console.print(f"streamed from {DEMO_CHATBOT}_stream (generative mode, the tiny GPT-2's noise):")
        for piece in c.stream("Tell me about Triton.", model=DEMO_CHATBOT, mode="generative", max_new_tokens=16, seed=1):
            console.out(piece, end="", highlight=False)
        console.out("")


DEMO = DemoStep("FAQ chatbot: all-MiniLM-L6-v2 retrieval over tritonize's own FAQ, tiny GPT-2 fallback", _demo_convert, _demo_show)
