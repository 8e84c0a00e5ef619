"""The chatbot's calls to other served models through Triton's business-logic scripting (BLS): in the
same server process, no network hop. Every sub-response is checked before its tensors are read; an
error keeps the callee's message, prefixed with its name (and its code, as far as Triton 2.51 keeps it).

`exec` blocks with the GIL released, so many worker threads wait on sub-requests at once and the
callee's dynamic batcher sees them together. A decoupled sub-request (the generator) is read as a
stream of responses up to the final flag.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tritonize.runtime.triton import pb


class SubRequestError(RuntimeError):
    def __init__(self, message: str, code):
        super().__init__(message)
        self.code = code


def _check(response, model: str):
    if response.has_error():
        error = response.error()
        code = error.code()
        # Triton 2.51's BLS drops the callee's error code (every error reads INTERNAL); the generator's
        # overload is the one a caller must tell apart (retry later), so it is recognised by its words.
        if code == pb().TritonError.INTERNAL and error.message().startswith("overloaded:"):
            code = pb().TritonError.UNAVAILABLE
        raise SubRequestError(f"{model}: {error.message()}", code)
    return response


def _bls_value(value):
    """BLS request parameters take bool, int or str only; numbers travel as text, which the generator parses."""
    return value if isinstance(value, (bool, int, str)) else str(value)


def embed(model: str, text: str) -> np.ndarray:
    """The embedder ensemble's L2-normalised vector of one text."""
    u = pb()
    request = u.InferenceRequest(
        model_name=model,
        inputs=[u.Tensor("TEXT", np.array([[text.encode("utf-8")]], dtype=np.object_))],
        requested_output_names=["EMBEDDING"],
    )
    response = _check(request.exec(), model)
    return u.get_output_tensor_by_name(response, "EMBEDDING").as_numpy()[0]


def generate(model: str, prompt: str, params: dict, stream: bool) -> Iterator[tuple[str, str]]:
    """(text piece, finish reason) per generator response; the reason is '' until the last one."""
    u = pb()
    request = u.InferenceRequest(
        model_name=model,
        inputs=[u.Tensor("TEXT", np.array([prompt.encode("utf-8")], dtype=np.object_))],
        requested_output_names=["TEXT", "FINISH_REASON"],
        parameters={**{k: _bls_value(v) for k, v in params.items()}, "stream": stream},
    )
    for response in request.exec(decoupled=True):
        _check(response, model)
        text = u.get_output_tensor_by_name(response, "TEXT")
        if text is None:  # an empty final response
            continue
        reason = u.get_output_tensor_by_name(response, "FINISH_REASON").as_numpy()[0].decode()
        yield text.as_numpy()[0].decode("utf-8"), reason
