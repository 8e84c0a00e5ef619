"""A chatbot's parameters (NAME and its streaming twin NAME_stream): what it calls, where its FAQ files
are, its defaults and limits, and the limits of the generator it calls (so a chat request fails exactly
as the generator would)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tritonize.contract.fields import Parameters, at_least
from tritonize.contract.generation import Limits

INDEXES = ("exact", "faiss")
# Models a BLS model calls; the server drains the caller first (tritonize/server/control.py).
CALLS_PARAMETER = "tritonize_calls"
# The generator's limits a chatbot copies (as generator_<name>) to budget its prompts.
GENERATOR_LIMITS = ("max_context", "max_new_tokens", "default_max_new_tokens", "max_sequences", "max_queue", "max_prompt_bytes")


@dataclass(frozen=True)
class ChatSettings(Parameters):
    """The defaults and limits of a question (its MODE, THRESHOLD, TOP_K and HISTORY inputs)."""

    threshold: float = 0.5
    top_k: int = 3
    max_top_k: int = 20
    max_question_bytes: int = 4_096
    max_history_bytes: int = 65_536  # HISTORY, the earlier turns as JSON (only what fits the generator's context is used)

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1] (a cosine score), got {self.threshold}")
        if not 1 <= self.top_k <= self.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.max_top_k}, got {self.top_k}")
        at_least(self, 1, "max_question_bytes", "max_history_bytes")


@dataclass(frozen=True)
class Chatbot:
    embedder: str
    generator: str
    generator_family: str  # decoder | encoder-decoder
    data_model: str  # the model whose version folder holds the FAQ, vectors, index and prompt (NAME)
    settings: ChatSettings = field(default_factory=ChatSettings)
    generator_limits: dict[str, int] = field(default_factory=dict)  # GENERATOR_LIMITS, as the generator serves them
    index: str = "exact"
    workers: int = 16  # threads waiting on sub-requests at once (concurrent questions the embedder can batch)
    max_in_flight: int = 256  # accepted and unanswered requests; beyond it: UNAVAILABLE, retry later
    faiss_ef_search: int = 64  # HNSW candidates visited per search (recall vs time), index=faiss only

    def __post_init__(self) -> None:
        if self.index not in INDEXES:
            raise ValueError(f"index must be exact or faiss, not {self.index!r}")
        at_least(self, 1, "workers", "max_in_flight", "faiss_ef_search")
        missing = [k for k in ("max_context", "max_new_tokens") if k not in self.generator_limits]
        if missing:
            raise ValueError(f"generator_limits lacks {', '.join(missing)}")

    @property
    def limits(self) -> Limits:
        return Limits(**self.generator_limits)

    def to_params(self, streaming: bool = False) -> dict[str, str]:
        # What the pipeline is, for clients and the gateway's model list: on NAME only, as for the
        # speech pipeline (NAME_stream is its streaming twin, not a pipeline of its own).
        return {
            **({} if streaming else {"task": "chat"}),
            "embedder": self.embedder, "generator": self.generator, "generator_family": self.generator_family,
            "data_model": self.data_model, "index": self.index,
            **self.settings.to_params(),
            "workers": str(self.workers), "max_in_flight": str(self.max_in_flight), "faiss_ef_search": str(self.faiss_ef_search),
            CALLS_PARAMETER: json.dumps([self.embedder, self.generator]),
            **{f"generator_{k}": str(v) for k, v in self.generator_limits.items() if k in GENERATOR_LIMITS},
        }

    @classmethod
    def from_params(cls, p: dict[str, str]) -> "Chatbot":
        limits = {k: int(p[f"generator_{k}"]) for k in GENERATOR_LIMITS if f"generator_{k}" in p}
        ints = {k: int(p[k]) for k in ("workers", "max_in_flight", "faiss_ef_search") if k in p}
        return cls(p["embedder"], p["generator"], p["generator_family"], p["data_model"], ChatSettings.from_params(p), limits,
                   p.get("index", "exact"), **ints)
