"""Every failure as OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, with the
HTTP status a client acts on: 400 a bad parameter (named in `param`), 401 a missing or wrong key, 404 an
unknown model, 413 a body over the limit, 429 overload and 503 a server that is not ready (both with
Retry-After), 504 a deadline passed. Triton's own errors are mapped from its message, which our runtime
starts with the field it refuses.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException

from tritonize.client import TritonizeError
from tritonize.gateway.protocol import ErrorInfo, ErrorResponse

RETRY_AFTER_S = 1


class ApiError(HTTPException):
    """An HTTPException, so that FastAPI passes it on even when raised while it reads the body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: int | None = None):
        super().__init__(status, message, {"Retry-After": str(retry_after)} if retry_after is not None else {})
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> bytes:
        info = ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=info).model_dump_json().encode()


def bad_param(param: str | None, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_parameter" if param else None)


def not_found(model: str) -> ApiError:
    return ApiError(404, f"The model '{model}' does not exist on this server (GET /v1/models lists them)", param="model",
                    code="model_not_found")


def overloaded(message: str) -> ApiError:
    return ApiError(429, message, type="overloaded_error", code="server_overloaded", retry_after=RETRY_AFTER_S)


def not_ready(message: str = "the Triton server is not ready (starting, draining or unreachable); retry later") -> ApiError:
    return ApiError(503, message, type="server_error", code="server_not_ready", retry_after=RETRY_AFTER_S)


# Names the runtime puts first in its messages -> the OpenAI parameter they come from.
PARAMS = {
    "max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
    "repetition_penalty": "repetition_penalty", "stop": "stop", "speaking_rate": "speed", "SPEAKING_RATE": "speed",
    "SEED": "seed", "prompt_name": "prompt_name", "dimensions": "dimensions",
}
_OVERLOAD = re.compile(r"overloaded|exceeds maximum queue size|queue is full", re.I)
_UNREACHABLE = re.compile(r"failed to connect|connection refused|unavailable|socket closed|connect failed|server is not ready", re.I)
_TEXT = re.compile(r"^(TEXT|prompt|text)\b|UTF-8|no characters this voice can speak|too long|bytes; the limit", re.I)


def from_triton(e: TritonizeError, text_param: str) -> ApiError:
    """The status and envelope for a failed Triton call; `text_param` names the request's text field."""
    message = e.message
    status = (e.status or "").upper()
    if _OVERLOAD.search(message):
        return overloaded(message)
    if "DEADLINE" in status or "deadline exceeded" in message.lower():
        return ApiError(504, f"the Triton server did not answer in time: {message}", type="server_error", code="timeout")
    if "UNAVAILABLE" in status or _UNREACHABLE.search(message):
        return not_ready(f"the Triton server is not reachable or not ready: {message}")
    if re.search(r"unknown model|is not found|not ready", message, re.I) and e.model:
        return not_found(e.model)
    first = re.match(r"^\W*([A-Za-z_]+)", message)
    word = first.group(1) if first else ""
    if word in PARAMS:
        param = PARAMS[word]
        return bad_param(param, message if param == word else f"{param}: {message}")
    if _TEXT.search(message):
        return bad_param(text_param, message)
    if "INVALID_ARG" in status:
        return bad_param(None, message)
    return ApiError(500, f"the Triton server failed the request: {message}", type="server_error")
