"""What turns a call's failures into TritonizeError (`calling`), and what the client refuses before
sending (`invalid`, `check_seed`): every failure a TritonizeError naming the field or the cause, with
Triton's code as its status (client/status.py)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import grpc
import numpy as np
from tritonclient.utils import InferenceServerException

from tritonize.client.types import TritonizeError

TRANSPORT_ERRORS = (InferenceServerException, grpc.RpcError, OSError)


@contextmanager
def calling(model: str | None, url: str) -> Iterator[None]:
    """Inside: any transport failure leaves as a TritonizeError naming the model and the cause."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise TritonizeError.wrap(exc, model, url) from None


def invalid(field: str, message: str) -> TritonizeError:
    """A request the client refuses before sending it (what the server would say, said sooner)."""
    return TritonizeError(f"{field} {message}", "INVALID_ARG")


def utf8(value, field: str) -> bytes:
    """A text field as UTF-8 bytes (bytes pass as they are; the server checks them); anything else, or a
    str that cannot be UTF-8 (a lone surrogate, which JSON's "\\ud800" decodes to), is refused by name."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise invalid(field, f"is not valid UTF-8 text ({e.reason} at offset {e.start})") from None
    if isinstance(value, bytes):
        return value
    raise invalid(field, f"must be str or bytes, not {type(value).__name__}")


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
