"""The chatbot's calls to other served models through Triton's business-logic scripting (BLS): in the
same server process, no network hop. Every sub-response is checked before its tensors are read; an
error keeps the callee's message, prefixed with its name (and its code, as far as Triton 2.51 keeps it).

`exec` blocks with the GIL released, so many worker threads wait on sub-requests at once and the
callee's dynamic batcher sees them together. A decoupled sub-request (the generator) is read as a
stream of responses up to the final flag.

A decoupled sub-request's response iterator must not be freed by the stub (Triton 2.51, python_backend
r24.10). Its final response queues a clean-up that drops the stub's own reference on a C++ thread that
does not hold the GIL; if that reference is the last one, the iterator's numpy arrays are freed there,
racing every worker thread that holds the GIL (seen as "Reference count error detected: an attempt was
made to deallocate the dtype 17 (O)", then the stub's death, within seconds of concurrent chat). So the
iterator is kept (`Retired`) until a call that travels the same first-in-first-out queue to Triton and
back (the response sender's `is_cancelled`) has returned: the clean-up ran before it, and the last
reference is ours, dropped with the GIL. python_backend r24.12 makes tensors take the GIL when freed.
"""

from __future__ import annotations

import collections
import itertools
import threading
from typing import Callable, Iterator

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


class Retired:
    """Finished response iterators, held until the stub has let go of them (see the module's docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: collections.deque[tuple[int, object]] = collections.deque()
        self._numbers = itertools.count()

    def settle(self, iterator, queue_barrier: Callable[[], bool]) -> None:
        """Hold `iterator` (its final response already read), then pass the barrier: everything queued
        before it, this iterator's clean-up included, has run. `queue_barrier` is a response sender's
        `is_cancelled` (before the final response): True may be the sender's cached answer, which never
        travelled, so nothing is released then; a later settle releases what this one held."""
        with self._lock:
            number = next(self._numbers)
            self._held.append((number, iterator))
        del iterator
        if queue_barrier():
            return
        released = []
        with self._lock:
            while self._held and self._held[0][0] <= number:
                released.append(self._held.popleft())
        del released  # the last references, dropped here with the GIL

    def __len__(self) -> int:
        return len(self._held)


RETIRED = Retired()


def generate(model: str, prompt: str, params: dict, stream: bool, queue_barrier: Callable[[], bool]) -> Iterator[tuple[str, str]]:
    """(text piece, finish reason) per generator response; the reason is '' until the last one.

    The last piece comes once the sub-request is read to its end and settled (`Retired.settle`), so a
    caller sends its final response after the barrier, while its sender may still be asked."""
    u = pb()
    request = u.InferenceRequest(
        model_name=model,
        inputs=[u.Tensor("TEXT", np.array([prompt.encode("utf-8")], dtype=np.object_))],
        requested_output_names=["TEXT", "FINISH_REASON"],
        parameters={**{k: _bls_value(v) for k, v in params.items()}, "stream": stream},
    )
    responses = request.exec(decoupled=True)
    read_to_end, last = False, None
    try:
        for response in responses:
            _check(response, model)
            text = u.get_output_tensor_by_name(response, "TEXT")
            if text is None:  # an empty final response
                continue
            piece = (text.as_numpy()[0].decode("utf-8"), u.get_output_tensor_by_name(response, "FINISH_REASON").as_numpy()[0].decode())
            if piece[1]:
                last = piece  # handed over after the settle below
            else:
                yield piece
        read_to_end = True
    finally:
        if not read_to_end:  # a caller that stopped early, an error: on to the final response, which queues the clean-up
            for _ in responses:  # (never on a finished iterator: its __iter__ starts the responses over)
                pass
        RETIRED.settle(responses, queue_barrier)
        del responses
    if last is not None:
        yield last
