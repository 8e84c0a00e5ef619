"""A served generator's parameters: one decoupled Python-backend model (GPT-2 or T5) whose limits and
defaults are config parameters, so an operator changes them in config.pbtxt without converting again.

`Limits` is both what a conversion is asked for (`max_context` 0: the model's own) and what the served
step reads back; `Generator` is the whole parameter set the converter writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tritonize.contract.fields import Parameters, at_least

FAMILIES = ("decoder", "encoder-decoder")
# Outputs of a decoder graph that returns only each step's new cache columns (new_key_values.L.key /
# .value, converters/generation/append_cache.py); a graph without them returns the whole cache (present.*).
NEW_CACHE_PREFIX = "new_key_values."


@dataclass(frozen=True)
class Limits(Parameters):
    """What one served generator accepts; errors name the field and the limit."""

    max_new_tokens: int = 512  # the largest max_new_tokens a request may ask for (capped by the context for GPT-2)
    default_max_new_tokens: int = 32
    max_sequences: int = 16  # sequences generated together (the running batch)
    max_queue: int = 64  # requests waiting for a slot; beyond it: "overloaded"
    max_prompt_bytes: int = 100_000
    intra_op_threads: int = 0  # ONNX Runtime or torch CPU threads (0: one per core)
    max_prefill_tokens: int = 2048  # rows x padded length of one prefill forward (1: every prompt alone)
    # prompt tokens + new tokens (decoder-only) or prompt tokens (encoder-decoder); 0: derive from the model
    max_context: int = 0

    def __post_init__(self) -> None:
        if self.max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1 (1: every prompt in its own forward), got {self.max_prefill_tokens}")
        at_least(self, 1, "max_new_tokens", "default_max_new_tokens", "max_sequences", "max_prompt_bytes")
        at_least(self, 0, "max_queue", "intra_op_threads", "max_context")

    def served(self, max_context: int, decoder_only: bool) -> "Limits":
        """The limits a model of `max_context` serves: a decoder's new tokens fit in its context with at
        least one prompt token, and the default never exceeds the limit."""
        max_new = min(self.max_new_tokens, max_context - 1) if decoder_only else self.max_new_tokens
        return replace(self, max_context=max_context, max_new_tokens=max_new, default_max_new_tokens=min(self.default_max_new_tokens, max_new))


@dataclass(frozen=True)
class ChatTemplate(Parameters):
    """The checkpoint's chat template and the special tokens it refers to, for the OpenAI gateway (which
    renders chat messages into a prompt); empty when the checkpoint has none."""

    chat_template: str = ""
    bos_token: str = ""
    eos_token: str = ""


@dataclass(frozen=True)
class Generator(Parameters):
    family: str  # decoder | encoder-decoder
    limits: Limits = field(default_factory=Limits)
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None  # encoder-decoder only
    chat: ChatTemplate | None = None  # None: not written

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.family == "encoder-decoder" and self.decoder_start_token_id is None:
            raise ValueError("decoder_start_token_id is required for an encoder-decoder generator")
        at_least(self.limits, 1, "max_context")

    @property
    def decoder_only(self) -> bool:
        return self.family == "decoder"

    def to_params(self) -> dict[str, str]:
        """Flat, as an operator edits them: the limits and the chat template are parameters of their own."""
        return {"task": "generation", "family": self.family, **self.limits.to_params(),
                "eos_token_id": "" if self.eos_token_id is None else str(self.eos_token_id),
                "decoder_start_token_id": "" if self.decoder_start_token_id is None else str(self.decoder_start_token_id),
                **(self.chat.to_params() if self.chat else {})}

    @classmethod
    def from_params(cls, p) -> "Generator":
        optional = lambda k: int(p[k]) if p.get(k, "") != "" else None  # noqa: E731
        chat = ChatTemplate.from_params(p) if "chat_template" in p else None
        return cls(p["family"], Limits.from_params(p), optional("eos_token_id"), optional("decoder_start_token_id"), chat)
