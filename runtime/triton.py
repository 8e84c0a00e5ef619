"""The little glue between Triton's Python backend and our plain-numpy steps.

`triton_python_backend_utils` only exists inside the backend stub, so it is imported lazily and the
rest of `runtime` stays importable (and unit-testable) anywhere.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class InputError(ValueError):
    """A request that is wrong in a way the caller can fix; the message names the field and the limit."""

    status = "INVALID_ARG"  # Triton's code for it (an exception class may set its own: see stream_error)


def pb():
    import triton_python_backend_utils as pb_utils  # only inside Triton

    return pb_utils


def model_config(args: dict) -> dict:
    return json.loads(args["model_config"])


def parameters(args: dict) -> dict[str, str]:
    """The string parameters of the model's config.pbtxt."""
    return {k: v["string_value"] for k, v in model_config(args).get("parameters", {}).items()}


def model_dir(args: dict) -> str:
    return f"{args['model_repository']}/{args['model_version']}"


def input_array(request, name: str) -> np.ndarray:
    tensor = pb().get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InputError(f"input {name} is missing")
    return tensor.as_numpy()


def optional_input(request, name: str) -> np.ndarray | None:
    """An input the model config marks `optional: true`; None when the request left it out."""
    tensor = pb().get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def response(outputs: dict[str, np.ndarray]):
    u = pb()
    return u.InferenceResponse(output_tensors=[u.Tensor(k, v) for k, v in outputs.items()])


def error_response(exc: Exception):
    u = pb()
    code = u.TritonError.INVALID_ARG if isinstance(exc, InputError) else u.TritonError.INTERNAL
    return u.InferenceResponse(output_tensors=[], error=u.TritonError(str(exc), code))


def stream_error(exc: Exception):
    """The error response of a decoupled (streaming) model. A gRPC stream carries only an error's text
    (Triton 2.51), so the text leads with Triton's code, "[INVALID_ARG] TEXT is empty", which the client
    reads back into TritonizeError.status (client/status.py). The code: the exception's `status`, else
    INTERNAL."""
    u = pb()
    status = getattr(exc, "status", "INTERNAL")
    code = getattr(u.TritonError, status, u.TritonError.INTERNAL)
    return u.InferenceResponse(output_tensors=[], error=u.TritonError(f"[{status}] {exc}", code))


class Counter:
    """A Prometheus counter on Triton's /metrics (custom metrics of the Python backend)."""

    _families: dict[str, Any] = {}

    def __init__(self, name: str, description: str, labels: dict[str, str]):
        u = pb()
        family = Counter._families.get(name)
        if family is None:
            family = Counter._families[name] = u.MetricFamily(name=name, description=description, kind=u.MetricFamily.COUNTER)
        self._metric = family.Metric(labels=labels)

    def add(self, value: float) -> None:
        if value:
            self._metric.increment(float(value))
