"""What the client returns and raises."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tritonize.client.status import normalize


class TritonizeError(RuntimeError):
    """Every failed call. `message` names the field or the cause (Triton's own text for what the server
    refused); `status` is Triton's error code whatever the transport (see client/status.py):
    INVALID_ARG (bad input: fix the request), UNAVAILABLE (overloaded, shutting down or unreachable:
    retry later), NOT_FOUND (no such model), DEADLINE_EXCEEDED, CANCELLED, INTERNAL."""

    def __init__(self, message: str, status: str | None = None, model: str | None = None):
        super().__init__(f"{model}: {message}" if model else message)
        self.message, self.status, self.model = message, status, model

    @classmethod
    def wrap(cls, exc: BaseException, model: str | None = None, url: str = "the server") -> "TritonizeError":
        """Any exception of a call as a TritonizeError, with Triton's code when the transport gave one."""
        if isinstance(exc, TritonizeError):
            return exc
        if callable(getattr(exc, "message", None)) and callable(getattr(exc, "status", None)):  # tritonclient's
            status, message = normalize(exc.status(), exc.message() or str(exc))
        elif callable(getattr(exc, "code", None)) and callable(getattr(exc, "details", None)):  # grpc's (asyncio client)
            code = exc.code()
            status, message = normalize(getattr(code, "name", None), exc.details() or str(exc))
        elif isinstance(exc, TimeoutError):
            status, message = "DEADLINE_EXCEEDED", f"no answer from the server at {url} in time ({exc or 'timed out'})"
        elif isinstance(exc, OSError):  # the HTTP client's socket: refused, reset, unreachable
            reason = exc.strerror or str(exc) or type(exc).__name__
            status, message = "UNAVAILABLE", f"cannot reach the server at {url}: {reason}"
        else:
            status, message = None, str(exc) or type(exc).__name__
        return cls(message, status, model)


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # probability of `label`
    probabilities: dict[str, float]
    logits: np.ndarray


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about a served pipeline, read once from its ensemble config."""

    name: str
    task: str
    max_batch_size: int
    labels: list[str]
    output_dims: dict[str, list[int]]
    ensemble: bool = False  # a multi-step ensemble (per-request embedding options are the fused step's)

    @classmethod
    def from_config(cls, config: dict) -> "ModelInfo":
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        return cls(
            name=config["name"],
            task=params.get("task", ""),
            max_batch_size=int(config.get("max_batch_size", 0)),
            labels=json.loads(params.get("labels") or "[]"),
            output_dims={o["name"]: [int(d) for d in o.get("dims", [])] for o in config.get("output", [])},
            ensemble=config.get("platform") == "ensemble",
        )
