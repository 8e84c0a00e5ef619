"""The routes: each parses its body (pydantic), calls its serving handler and returns JSON or a stream.
Handlers live on `app.state` (built once in `app.py`); completions and chat pick theirs by the named
pipeline's kind (a generator or a chatbot), after the registry has checked that the endpoint serves that
kind (`tritonize.families`). Errors are raised as ApiError and rendered by the app's exception handlers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tritonize.families import AUDIO_SPEECH, CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, GENERATION, RERANK
from tritonize.gateway.errors import not_ready
from tritonize.gateway.protocol import (
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelCard, ModelList, RerankRequest, SpeechRequest,
)
from tritonize.gateway.streaming import DisconnectAwareStream, with_cancellation

router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(model) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _json_or_stream(result) -> Response:
    if hasattr(result, "model_dump_json"):
        return _json(result)
    return DisconnectAwareStream(result, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/health")
async def health(raw_request: Request):
    registry = raw_request.app.state.registry
    if not await registry.client.is_ready():
        registry.ready = False
        raise not_ready()
    registry.ready = True
    return JSONResponse({"status": "ok"})


@router.get("/v1/models")
async def list_models(raw_request: Request):
    registry = raw_request.app.state.registry
    await registry.ensure_ready()
    # A chat template matters only where messages become a prompt: a generator's (a chatbot takes the last question).
    cards = [ModelCard(id=p.name, kind=p.kind, max_model_len=p.max_context,
                       chat_template=bool(p.chat_template) if p.kind in GENERATION.tasks else None)
             for p in await registry.all()]
    return _json(ModelList(data=cards))


@router.post(EMBEDDINGS)
@with_cancellation
async def create_embedding(request: EmbeddingRequest, raw_request: Request):
    return _json(await raw_request.app.state.embeddings.create(request))


@router.post(RERANK)
@with_cancellation
async def create_rerank(request: RerankRequest, raw_request: Request):
    result = await raw_request.app.state.rerank.create(request)
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json")  # no document unless asked


async def _text(request: CompletionRequest | ChatCompletionRequest, raw_request: Request, endpoint: str) -> Response:
    state = raw_request.app.state
    await state.registry.ensure_ready()
    pipeline = await state.registry.get(request.model, endpoint)
    return _json_or_stream(await state.text[pipeline.kind].create(request, pipeline))


@router.post(COMPLETIONS)
@with_cancellation
async def create_completion(request: CompletionRequest, raw_request: Request):
    return await _text(request, raw_request, COMPLETIONS)


@router.post(CHAT_COMPLETIONS)
@with_cancellation
async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request):
    return await _text(request, raw_request, CHAT_COMPLETIONS)


@router.post(AUDIO_SPEECH)
@with_cancellation
async def create_speech(request: SpeechRequest, raw_request: Request):
    audio, media_type, headers = await raw_request.app.state.speech.create(request)
    return DisconnectAwareStream(audio, media_type=media_type, headers=headers)
