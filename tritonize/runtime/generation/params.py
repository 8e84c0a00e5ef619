"""Per-request generation parameters, checked against the served model's limits (tritonize.contract.generation)
with errors that name the field and the limit.

Parameters travel as Triton request parameters (gRPC `parameters` map: int, double, bool or string),
never as input tensors, so a caller sets only what it needs and unknown names are caught by name.
Numbers may also come as strings (`"0.7"`); `stop` is one string or a JSON list of strings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from tritonize.contract.generation import Limits
from tritonize.runtime.triton import InputError

__all__ = ["Limits", "Overloaded", "SamplingParams", "fit_to_context", "parse"]

PARAMETERS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop", "stream")
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64


class Overloaded(RuntimeError):
    """As many requests are in flight (running or waiting for a slot) as the capacity allows
    (max_sequences + max_queue): the caller should retry later."""

    status = "UNAVAILABLE"  # Triton's code (runtime/triton.py: stream_error)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy (Hugging Face's default, do_sample=False)
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # 1: off (Hugging Face's CTRL-style penalty otherwise)
    seed: int | None = None  # None: a fresh random seed
    stop: tuple[str, ...] = field(default_factory=tuple)
    stream: bool = True  # False: one response with the whole text


def _number(name: str, value, kind):
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            raise InputError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}") from None
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"{name} must be an integer, got {value}")
        value = int(value)
    if kind is float and not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number, got {value}")
    return kind(value)


def _stop_strings(value) -> tuple[str, ...]:
    if isinstance(value, str):
        items = json.loads(value) if value.startswith("[") else [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise InputError("stop must be a string or a JSON list of strings")
    if len(items) > MAX_STOP_STRINGS:
        raise InputError(f"stop has {len(items)} strings; the limit is {MAX_STOP_STRINGS}")
    for s in items:
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
            raise InputError(f"stop strings must be non-empty strings of at most {MAX_STOP_CHARS} characters, got {s!r}")
    return tuple(items)


def parse(raw: dict, limits: Limits) -> tuple[SamplingParams, bool]:
    """SamplingParams from a request's parameters; the flag says whether max_new_tokens was given."""
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(PARAMETERS)}")
    explicit = "max_new_tokens" in raw
    n = _number("max_new_tokens", raw.get("max_new_tokens", limits.default_max_new_tokens), int)
    if not 1 <= n <= limits.max_new_tokens:
        raise InputError(f"max_new_tokens must be between 1 and {limits.max_new_tokens}, got {n}")
    temperature = _number("temperature", raw.get("temperature", 0.0), float)
    if temperature < 0:
        raise InputError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    top_k = _number("top_k", raw.get("top_k", 0), int)
    if top_k < 0:
        raise InputError(f"top_k must be >= 0 (0 is off), got {top_k}")
    top_p = _number("top_p", raw.get("top_p", 1.0), float)
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    penalty = _number("repetition_penalty", raw.get("repetition_penalty", 1.0), float)
    if penalty <= 0:
        raise InputError(f"repetition_penalty must be > 0 (1 is off), got {penalty}")
    seed = raw.get("seed")
    if seed is not None:
        seed = _number("seed", seed, int)
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
    stream = raw.get("stream", True)
    if isinstance(stream, str):
        stream = stream.lower() in ("1", "true", "yes")
    stop = _stop_strings(raw["stop"]) if "stop" in raw else ()
    return SamplingParams(n, temperature, top_k, top_p, penalty, seed, stop, bool(stream)), explicit


def fit_to_context(params: SamplingParams, explicit: bool, prompt_tokens: int, limits: Limits, decoder_only: bool) -> SamplingParams:
    """Check the prompt against the context; a default max_new_tokens shrinks to fit, an explicit one must fit."""
    if prompt_tokens == 0:
        raise InputError("TEXT is empty: send a prompt of at least one token")
    if prompt_tokens > limits.max_context or (decoder_only and prompt_tokens >= limits.max_context):
        room = limits.max_context - 1 if decoder_only else limits.max_context
        raise InputError(f"prompt is {prompt_tokens} tokens; the limit is {room} tokens (the model's context is {limits.max_context})")
    if not decoder_only:
        return params
    room = limits.max_context - prompt_tokens
    if params.max_new_tokens <= room:
        return params
    if explicit:
        raise InputError(
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the model's context of "
            f"{limits.max_context} tokens; ask for at most {room} new tokens"
        )
    return SamplingParams(**{**params.__dict__, "max_new_tokens": room})
