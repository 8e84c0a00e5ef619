"""A chat request, its settings and the routing decision: plain Python, no Triton, so it is unit-tested alone.

Per request (optional input tensors): MODE (retrieval | generative | auto), THRESHOLD (cosine score in
[-1, 1]), TOP_K (candidates returned, and FAQ entries put in a fallback prompt) and HISTORY (the
conversation's earlier turns, a JSON list of {"role": "user" | "assistant", "content": text}, oldest
first: context for a generated answer; retrieval reads the question alone). Generation parameters
travel as request parameters and are checked with the generator's own limits and messages
(`tritonize.runtime.generation.params.parse`), so a chat request fails exactly as the generator would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from tritonize.contract.chat import ChatSettings
from tritonize.contract.generation import Limits
from tritonize.runtime.generation.params import parse
from tritonize.runtime.triton import InputError

MODES = ("auto", "retrieval", "generative")
GENERATED, NO_MATCH = "generated", "no-match"  # SOURCE of a generated answer / of a retrieval miss
RESERVED_PARAMETERS = ("stream",)  # the chatbot decides: one response (NAME) or a stream (NAME_stream)


@dataclass(frozen=True)
class ChatRequest:
    question: str
    mode: str
    threshold: float
    top_k: int
    generation: dict = field(default_factory=dict)  # raw generation parameters, already checked
    max_new_tokens: int | None = None  # when the request set it (the prompt budget depends on it)
    history: tuple[tuple[str, str], ...] = ()  # earlier turns (role, text), oldest first

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"MODE must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise InputError(f"THRESHOLD must be a cosine score in [-1, 1], got {self.threshold}")
        if not self.question.strip():
            raise InputError("TEXT is empty: send a question")


HISTORY_ROLES = ("user", "assistant")


def parse_history(text: str | None) -> tuple[tuple[str, str], ...]:
    """HISTORY's turns as (role, text); an InputError names the turn and what is wrong with it."""
    if text is None:
        return ()
    try:
        turns = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"HISTORY is not JSON ({e.msg} at line {e.lineno} column {e.colno}); send a list of "
                         f'{{"role": "user" | "assistant", "content": "..."}}') from None
    if not isinstance(turns, list):
        raise InputError(f"HISTORY must be a JSON list of turns, got {type(turns).__name__}")
    parsed = []
    for i, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in HISTORY_ROLES or not isinstance(content, str):
            raise InputError(f"HISTORY[{i}] must be {{\"role\": \"user\" | \"assistant\", \"content\": text}}, got {json.dumps(turn)[:80]}")
        parsed.append((role, content))
    return tuple(parsed)


def make_request(question: str, mode: str | None, threshold: float | None, top_k: int | None, raw_params: dict,
                 settings: ChatSettings, limits: Limits, history: str | None = None) -> ChatRequest:
    """A checked ChatRequest (TEXT's size and encoding are checked as it is decoded); any problem is an
    InputError naming the field and the limit."""
    k = settings.top_k if top_k is None else top_k
    if not 1 <= k <= settings.max_top_k:
        raise InputError(f"TOP_K must be between 1 and {settings.max_top_k}, got {k}")
    reserved = sorted(set(raw_params) & set(RESERVED_PARAMETERS))
    if reserved:
        raise InputError(f"parameter(s) {', '.join(reserved)} are set by the chatbot: call NAME for one response, NAME_stream to stream")
    params, explicit = parse(raw_params, limits)  # the generator's own checks and messages, before any work
    return ChatRequest(question, mode or "auto", settings.threshold if threshold is None else threshold, k, dict(raw_params),
                       params.max_new_tokens if explicit else None, parse_history(history))


@dataclass(frozen=True)
class Route:
    """What to answer with: an FAQ entry (its row), no match, or generation with some rows as context."""

    kind: str  # "faq" | "no-match" | "generate"
    row: int = -1
    context: tuple[int, ...] = ()


def route(request: ChatRequest, rows: list[int], scores: list[float]) -> Route:
    """The decision, from the candidates (best first). Auto: the FAQ answer when the best score >=
    THRESHOLD, otherwise generate with the candidates as context; generative mode uses no context."""
    best = scores[0] if scores else -math.inf
    if request.mode == "generative":
        return Route("generate")
    if best >= request.threshold:
        return Route("faq", rows[0])
    if request.mode == "retrieval":
        return Route("no-match")
    return Route("generate", context=tuple(rows))
