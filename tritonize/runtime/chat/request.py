"""A chat request, its settings and the routing decision: plain Python, no Triton, so it is unit-tested alone.

Per request (optional input tensors): MODE (retrieval | generative | auto), THRESHOLD (cosine score in
[-1, 1]) and TOP_K (candidates returned, and FAQ entries put in a fallback prompt). Generation parameters
travel as request parameters and are checked with the generator's own limits and messages
(`tritonize.runtime.generation.params.parse`), so a chat request fails exactly as the generator would.
"""

from __future__ import annotations

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

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"MODE must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise InputError(f"THRESHOLD must be a cosine score in [-1, 1], got {self.threshold}")
        if not self.question.strip():
            raise InputError("TEXT is empty: send a question")


def make_request(question: str, mode: str | None, threshold: float | None, top_k: int | None, raw_params: dict,
                 settings: ChatSettings, limits: Limits) -> ChatRequest:
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
                       params.max_new_tokens if explicit else None)


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
