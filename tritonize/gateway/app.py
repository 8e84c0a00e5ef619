"""The gateway's ASGI app: `build_app(settings)` (vLLM's api_server shape) and `serve(settings)` (uvicorn).

The lifespan opens the project's async clients once, each one gRPC channel shared by every request
(embeddings, generation, speech, chat), and the registry that polls readiness; handlers are built once on
`app.state`, with `app.state.text` mapping each pipeline kind that completions and chat serve to its
handler (generators and chatbots differ). Exception handlers turn every error into OpenAI's envelope. Middlewares, outermost first:
the body limit, then the API keys.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from tritonize.client import AsyncChatClient, AsyncClient, AsyncGenerationClient, AsyncSpeechClient
from tritonize.families import CHAT, GENERATION
from tritonize.gateway.errors import ApiError
from tritonize.gateway.registry import Registry
from tritonize.gateway.routers import router
from tritonize.gateway.security import DEFAULT_MAX_BODY_BYTES, ApiKeys, BodyLimit
from tritonize.gateway.serving.chatbot import ChatbotServing
from tritonize.gateway.serving.embeddings import EmbeddingServing
from tritonize.gateway.serving.generation import GenerationServing
from tritonize.gateway.serving.rerank import RerankServing
from tritonize.gateway.serving.speech import SpeechServing

log = logging.getLogger("tritonize.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    url: str  # the Triton server's gRPC host:port
    host: str = "127.0.0.1"  # loopback unless asked otherwise, like the server
    port: int = 9000
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout_s: float = 300.0  # per Triton call (a whole generation)
    ready_poll_s: float = 1.0

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


def _error_response(e: ApiError) -> Response:
    return Response(e.body(), status_code=e.status, media_type="application/json", headers=e.headers)


async def _api_error(request: Request, e: ApiError) -> Response:
    return _error_response(e)


async def _http_error(request: Request, e: HTTPException) -> Response:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    return _error_response(ApiError(e.status_code, str(e.detail), code=codes.get(e.status_code)))


async def _validation_error(request: Request, e: RequestValidationError) -> Response:
    first = e.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return _error_response(ApiError(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}"))
    # pydantic prefixes the message of a validator's ValueError; the field is what a client needs.
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    param = loc[0] if loc else None
    where = ".".join(loc) if loc else "body"
    if first.get("type") == "extra_forbidden":
        message = "unknown parameter (not part of this endpoint's API)"
    return _error_response(ApiError(400, f"{where}: {message}", param=param, code="invalid_parameter"))


async def _unexpected(request: Request, e: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    return _error_response(ApiError(500, f"internal gateway error: {type(e).__name__}", type="server_error"))


def build_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        embed = AsyncClient(settings.url, "grpc", timeout_s=settings.timeout_s)
        generate = AsyncGenerationClient(settings.url, timeout_s=settings.timeout_s)
        speak = AsyncSpeechClient(settings.url, timeout_s=settings.timeout_s)
        ask = AsyncChatClient(settings.url, timeout_s=settings.timeout_s)
        registry = Registry(embed, settings.ready_poll_s)
        registry.start()
        app.state.registry = registry
        app.state.embeddings = EmbeddingServing(embed, registry)
        app.state.rerank = RerankServing(embed, registry)
        app.state.speech = SpeechServing(speak, registry)
        generation, chatbot = GenerationServing(generate), ChatbotServing(ask)
        app.state.text = {**{kind: generation for kind in GENERATION.tasks}, **{kind: chatbot for kind in CHAT.tasks}}
        try:
            yield
        finally:
            await registry.stop()
            for client in (embed, generate, speak, ask):
                await client.close()

    app = FastAPI(title="tritonize OpenAI-compatible gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(ApiKeys, keys=settings.api_keys)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # added last: runs first
    return app


def serve(settings: GatewaySettings) -> None:
    """Run the gateway with uvicorn until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    # No access log: request lines are not needed to operate it, and nothing secret can leak through one.
    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_level="warning", access_log=False,
                http="httptools", lifespan="on")
