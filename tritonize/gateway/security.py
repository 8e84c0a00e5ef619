"""Two plain ASGI middlewares that act before any body is parsed or any Triton call is made.

- `BodyLimit`: a declared Content-Length over the limit is refused at once (413); a chunked body is
  counted as it arrives and refused when it passes the limit.
- `ApiKeys`: with keys configured, every /v1/ route needs `Authorization: Bearer KEY`. Keys are compared
  as SHA-256 digests with `hmac.compare_digest`, each key every time, so the time taken says nothing
  about how much of a key matched; a key is never logged or echoed. /health stays open (probes).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from tritonize.gateway.errors import ApiError

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def load_api_keys(path: Path) -> tuple[str, ...]:
    """One key per line; blank lines and lines starting with # are skipped."""
    keys = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ValueError(f"{path} holds no API key (one per line)")
    return keys


async def send_error(send, error: ApiError, extra_headers: dict[str, str] | None = None) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in {**error.headers, **(extra_headers or {})}.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    def error(self, size: int | None) -> ApiError:
        seen = f"is {size} bytes" if size is not None else "is larger"
        return ApiError(413, f"the request body {seen}; the limit is {self.max_bytes} bytes (tritonize gateway --max-body-bytes)",
                        code="request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, self.error(int(declared)), {"Connection": "close"})
        received = 0
        started = False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self.error(None)
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except ApiError as e:  # raised in `counted` and not turned into a response by the app
            if started:
                raise
            await send_error(send, e, {"Connection": "close"})


class ApiKeys:
    def __init__(self, app, keys: tuple[str, ...]):
        self.app = app
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def allowed(self, header: bytes | None) -> bool:
        scheme, _, token = (header or b"").partition(b" ")
        digest = hashlib.sha256(token.strip()).digest()
        ok = False
        for known in self._digests:  # no early exit
            ok |= hmac.compare_digest(digest, known)
        return ok and scheme.lower() == b"bearer"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and self._digests:
            if not self.allowed(dict(scope["headers"]).get(b"authorization")):
                error = ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                                 type="authentication_error", code="invalid_api_key")
                return await send_error(send, error, {"WWW-Authenticate": "Bearer"})
        await self.app(scope, receive, send)
