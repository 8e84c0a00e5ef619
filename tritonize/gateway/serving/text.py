"""What /v1/completions and /v1/chat/completions share, whichever pipeline writes the text (a generator
or an FAQ chatbot): `TextServing`, the handler's sequence (subclasses say what to send and how to call
the pipeline), OpenAI's finish reasons, usage, the whole response, and the stream.

Streamed, each text piece becomes one chunk in OpenAI's format (a chat stream opens with the role); the
last carries `finish_reason`, an optional usage chunk follows, then `data: [DONE]`.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncGenerator, AsyncIterator

from tritonize.client import GenerationChunk, TritonizeError
from tritonize.gateway.errors import from_triton
from tritonize.gateway.protocol import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    CompletionChoice, CompletionRequest, CompletionResponse, Delta, Sampling, Usage, new_id, now,
)
from tritonize.gateway.registry import Pipeline
from tritonize.gateway.streaming import prefetch, sse_events

# The engine's reasons -> OpenAI's: a stop string ends like eos ("stop"); the token limit is "length". Anything
# else that ends an answer (a chatbot's `retrieved` FAQ answer) is a natural end: "stop".
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def finish_reason(engine_reason: str | None) -> str | None:
    return FINISH_REASONS.get(engine_reason, "stop") if engine_reason else None


def usage(prompt_tokens: int | None, completion_tokens: int) -> Usage:
    p = prompt_tokens or 0
    return Usage(prompt_tokens=p, completion_tokens=completion_tokens, total_tokens=p + completion_tokens)


def whole(request: Sampling, text: str, reason: str | None, usage_: Usage | None) -> CompletionResponse | ChatCompletionResponse:
    """The one-shot response: a chat completion for a chat request, a text completion otherwise."""
    head = {"created": now(), "model": request.model, "usage": usage_}
    if isinstance(request, ChatCompletionRequest):
        return ChatCompletionResponse(id=new_id("chatcmpl"), **head, choices=[
            ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason(reason))])
    return CompletionResponse(id=new_id("cmpl"), **head, choices=[CompletionChoice(text=text, finish_reason=finish_reason(reason))])


def _completion_chunk(head: dict, text: str | None, reason: str | None, usage_: Usage | None, first: bool) -> str:
    choices = [] if text is None else [CompletionChoice(text=text, finish_reason=reason)]
    return CompletionResponse(**head, choices=choices, usage=usage_).model_dump_json()


def _chat_chunk(head: dict, text: str | None, reason: str | None, usage_: Usage | None, first: bool) -> str:
    if text is None:
        choices = []
    else:
        delta = Delta(role="assistant", content=text) if first else Delta(content=text if text or not reason else None)
        choices = [ChatChunkChoice(delta=delta, finish_reason=reason)]
    return ChatCompletionChunk(**head, choices=choices, usage=usage_).model_dump_json()


async def stream(request: Sampling, chunks: AsyncIterator[GenerationChunk]) -> AsyncIterator[str]:
    """Waits for the first chunk (errors there keep their HTTP status), then streams SSE events; closing the
    stream closes `chunks` (an unfinished Triton request is cancelled)."""
    first, rest = await prefetch(chunks)
    is_chat = isinstance(request, ChatCompletionRequest)
    render_chunk = _chat_chunk if is_chat else _completion_chunk
    head = {"id": new_id("chatcmpl" if is_chat else "cmpl"), "created": now(), "model": request.model}

    async def events() -> AsyncIterator[str]:
        tokens, prompt_tokens, sent_first = 0, None, False
        if is_chat:  # OpenAI opens a chat stream with the role
            yield render_chunk(head, "", None, None, True)
            sent_first = True
        chunk = first
        try:
            while chunk is not None:
                tokens += len(chunk.token_ids)
                prompt_tokens = chunk.prompt_tokens if chunk.prompt_tokens is not None else prompt_tokens
                reason = finish_reason(chunk.finish_reason)
                if chunk.text or reason:
                    yield render_chunk(head, chunk.text, reason, None, not sent_first)
                    sent_first = True
                chunk = await anext(rest, None)
        finally:
            await rest.aclose()  # closes the gRPC stream; an unfinished Triton request is cancelled
        if request.include_usage:
            yield render_chunk(head, None, None, usage(prompt_tokens, tokens), False)

    return sse_events(events())


class TextServing:
    """A completions or chat handler: the request becomes the text sent and the pipeline's parameters
    (`prepare`), then one response (`one_shot`) or a stream of pieces (`pieces`); a Triton error becomes
    OpenAI's, naming the request's text field where the pipeline refused the text."""

    async def create(self, request: CompletionRequest | ChatCompletionRequest,
                     pipeline: Pipeline) -> CompletionResponse | ChatCompletionResponse | AsyncIterator[str]:
        sent, text_param, params = self.prepare(request, pipeline)
        if request.stream:
            return await stream(request, self._checked(self.pieces(sent, request.model, params), text_param))
        try:
            text, reason, usage_ = await self.one_shot(sent, request.model, params)
        except TritonizeError as e:
            raise from_triton(e, text_param) from None
        return whole(request, text, reason, usage_)

    def prepare(self, request: CompletionRequest | ChatCompletionRequest, pipeline: Pipeline) -> tuple[str, str, dict]:
        """(the text sent, the request field it came from, the parameters)."""
        raise NotImplementedError

    async def one_shot(self, sent: str, model: str, params: dict) -> tuple[str, str | None, Usage | None]:
        """(text, the pipeline's finish reason, usage) of one response."""
        raise NotImplementedError

    def pieces(self, sent: str, model: str, params: dict) -> AsyncGenerator[GenerationChunk, None]:
        raise NotImplementedError

    @staticmethod
    async def _checked(chunks: AsyncGenerator[GenerationChunk, None], text_param: str) -> AsyncIterator[GenerationChunk]:
        try:
            async with aclosing(chunks):  # closing this stream closes the pipeline's
                async for chunk in chunks:
                    yield chunk
        except TritonizeError as e:
            raise from_triton(e, text_param) from None
