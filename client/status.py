"""Triton's error code from whatever a transport says, in one vocabulary: INVALID_ARG, UNAVAILABLE,
NOT_FOUND, INTERNAL, UNSUPPORTED, ALREADY_EXISTS, CANCELLED, DEADLINE_EXCEEDED, UNKNOWN.

gRPC says `StatusCode.INVALID_ARGUMENT`, HTTP says `400`. A decoupled model's error reaches a gRPC
stream as bare text: Triton 2.51 sends no code with it (its `triton_grpc_error` mode would, but on
2.51 every error in that mode takes a cancellation path that logs "HandleCancellation called even when
the context was not cancelled", and a test server died right after such errors). So tritonize's
runtime leads a streamed error's text with its code, "[UNAVAILABLE] overloaded: ...", see
`runtime/triton.py: stream_error`, and Triton's own stream errors are known by their text.
"""

from __future__ import annotations

import re

_GRPC = {"INVALID_ARGUMENT": "INVALID_ARG", "UNIMPLEMENTED": "UNSUPPORTED"}  # where gRPC's names differ
_HTTP = {"400": "INVALID_ARG", "404": "NOT_FOUND", "409": "ALREADY_EXISTS", "499": "CANCELLED", "500": "INTERNAL",
         "501": "UNSUPPORTED", "503": "UNAVAILABLE", "429": "UNAVAILABLE", "403": "PERMISSION_DENIED"}
TAG = re.compile(r"^\[([A-Z_]+)\] ")
# Streamed errors without a tag: Triton's own, and the generator's overload refusal.
_BY_TEXT = (
    ("Request for unknown model", "NOT_FOUND"),
    ("overloaded: ", "UNAVAILABLE"),
    ("is not healthy", "UNAVAILABLE"),  # a dead Python-backend stub
    ("has stopped accepting new inference requests", "UNAVAILABLE"),  # a model shutting down
)


def normalize(status: str | None, message: str) -> tuple[str | None, str]:
    """(Triton's code, the message without a code tag); the code is None when nothing says it."""
    tag = TAG.match(message)
    if tag:
        message = message[tag.end():]
    if status:
        name = str(status).removeprefix("StatusCode.")
        return _HTTP.get(name) or _GRPC.get(name, name), message
    if tag:
        return tag.group(1), message
    return next((code for text, code in _BY_TEXT if text in message), None), message
