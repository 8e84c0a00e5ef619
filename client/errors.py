"""Every failure a client call can meet, as one `TritonizeError` with a status in Triton's vocabulary.

gRPC says `StatusCode.INVALID_ARGUMENT`, HTTP says `400`, a refused connection says nothing at all
(an OSError from the socket), and a decoupled stream's error carries no code unless the stream is
opened with the `triton_grpc_error` header (which `streams.py` sends). `calling()` turns all of
them into `TritonizeError(message, status, model)`, so overload (UNAVAILABLE) can be told from bad
input (INVALID_ARG) whatever the transport.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import grpc
import numpy as np
from tritonclient.utils import InferenceServerException

from tritonize.client.types import TritonizeError

# gRPC status names that Triton's own error codes spell differently.
_GRPC = {"INVALID_ARGUMENT": "INVALID_ARG", "UNIMPLEMENTED": "UNSUPPORTED"}
# Triton's HTTP front end: its status codes back to Triton's error codes.
_HTTP = {"400": "INVALID_ARG", "404": "NOT_FOUND", "409": "ALREADY_EXISTS", "499": "CANCELLED", "500": "INTERNAL",
         "501": "UNSUPPORTED", "503": "UNAVAILABLE", "429": "UNAVAILABLE", "403": "PERMISSION_DENIED"}
# Errors Triton's core reports in a stream without any code.
_BY_MESSAGE = {"Request for unknown model": "NOT_FOUND"}


def normalize_status(status: str | None, message: str = "") -> str | None:
    """'StatusCode.INVALID_ARGUMENT', '400' or 'INVALID_ARG' -> 'INVALID_ARG'; None when nothing says."""
    if status:
        name = str(status).removeprefix("StatusCode.")
        return _HTTP.get(name) or _GRPC.get(name, name)
    return next((code for prefix, code in _BY_MESSAGE.items() if message.startswith(prefix)), None)


def from_exception(exc: BaseException, model: str | None, url: str) -> TritonizeError:
    if isinstance(exc, InferenceServerException):
        message = exc.message() or str(exc)
        return TritonizeError(message, normalize_status(exc.status(), message), model)
    if isinstance(exc, grpc.RpcError):  # the asyncio client lets these through
        code, details = exc.code(), exc.details() or str(exc)
        return TritonizeError(details, normalize_status(code.name if code else None, details), model)
    if isinstance(exc, TimeoutError):
        return TritonizeError(f"no answer from the server at {url} in time ({exc or 'timed out'})", "DEADLINE_EXCEEDED", model)
    if isinstance(exc, OSError):  # the HTTP client's socket: refused, reset, unreachable
        reason = exc.strerror or str(exc) or type(exc).__name__
        return TritonizeError(f"cannot reach the server at {url}: {reason}", "UNAVAILABLE", model)
    raise TypeError(f"not a transport error: {exc!r}")


TRANSPORT_ERRORS = (InferenceServerException, grpc.RpcError, OSError)


def wrap(exc: BaseException, model: str | None = None, url: str = "the server") -> TritonizeError:
    """Any exception of a call as a TritonizeError (transport errors with their status)."""
    if isinstance(exc, TritonizeError):
        return exc
    if isinstance(exc, TRANSPORT_ERRORS):
        return from_exception(exc, model, url)
    return TritonizeError(str(exc) or type(exc).__name__, None, model)


@contextmanager
def calling(model: str | None, url: str) -> Iterator[None]:
    """Inside: any transport failure leaves as a TritonizeError naming the model and the cause."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise from_exception(exc, model, url) from None


def invalid(field: str, message: str) -> TritonizeError:
    """A request the client refuses before sending it (what the server would say, said sooner)."""
    return TritonizeError(f"{field} {message}", "INVALID_ARG")


INT64_MAX = 2**63 - 1


def check_seed(seed) -> int | None:
    """Seeds travel as int64: a clear error instead of tritonclient's 'Value out of range'."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise invalid("seed", f"must be an integer in [0, 2**63 - 1], got {seed!r}")
    if not 0 <= int(seed) <= INT64_MAX:
        raise invalid("seed", f"must be in [0, 2**63 - 1] (it travels as int64), got {seed}")
    return int(seed)
