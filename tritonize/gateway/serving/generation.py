"""POST /v1/completions and /v1/chat/completions on a generator, through AsyncGenerationClient.

A request becomes one prompt (chat: rendered with the checkpoint's template, see `chat.py`) and the
generator's parameters; the generator runs its own stop strings, limits and seeded sampling, so the text
equals `GenerationClient.generate` for the same prompt and parameters. Streamed, each token piece becomes
one chunk in OpenAI's format; the last carries `finish_reason`, an optional usage chunk follows, then
`data: [DONE]`.
"""

from __future__ import annotations

from typing import AsyncIterator

from tritonize.client import AsyncGenerationClient, GenerationChunk, TritonizeError
from tritonize.families import CHAT_COMPLETIONS, COMPLETIONS
from tritonize.gateway.chat import render
from tritonize.gateway.errors import from_triton
from tritonize.gateway.protocol import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    CompletionChoice, CompletionRequest, CompletionResponse, Delta, Sampling, Usage, new_id, now,
)
from tritonize.gateway.registry import Registry
from tritonize.gateway.streaming import prefetch, sse_events

# The engine's reasons -> OpenAI's: a stop string ends like eos ("stop"); the token limit is "length".
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def finish_reason(engine_reason: str | None) -> str | None:
    return FINISH_REASONS.get(engine_reason, "stop") if engine_reason else None


def usage(prompt_tokens: int | None, completion_tokens: int) -> Usage:
    p = prompt_tokens or 0
    return Usage(prompt_tokens=p, completion_tokens=completion_tokens, total_tokens=p + completion_tokens)


class GenerationServing:
    def __init__(self, client: AsyncGenerationClient, registry: Registry):
        self.client, self.registry = client, registry

    # -- request -> prompt --------------------------------------------------------------------------
    async def _prepare(self, request: Sampling, endpoint: str) -> tuple[str, dict, str]:
        await self.registry.ensure_ready()
        pipeline = await self.registry.get(request.model, endpoint)
        if isinstance(request, ChatCompletionRequest):
            p = pipeline.params
            prompt = render(request.messages, pipeline.chat_template, p.get("bos_token", ""), p.get("eos_token", ""),
                            request.add_generation_prompt)
            return prompt, request.sampling(), "messages"
        return request.text, request.sampling(), "prompt"

    async def _chunks(self, prompt: str, model: str, params: dict, text_param: str) -> AsyncIterator[GenerationChunk]:
        try:
            async for chunk in self.client.stream_chunks(prompt, model=model, **params):
                yield chunk
        except TritonizeError as e:
            raise from_triton(e, text_param) from None

    async def _whole(self, prompt: str, model: str, params: dict, text_param: str) -> GenerationChunk:
        try:
            return await self.client.generate_chunk(prompt, model=model, **params)
        except TritonizeError as e:
            raise from_triton(e, text_param) from None

    # -- completions ----------------------------------------------------------------------------------
    async def completion(self, request: CompletionRequest) -> CompletionResponse | AsyncIterator[str]:
        prompt, params, text_param = await self._prepare(request, COMPLETIONS)
        if request.stream:
            return await self._stream(request, self._chunks(prompt, request.model, params, text_param), self._completion_chunk)
        whole = await self._whole(prompt, request.model, params, text_param)
        return CompletionResponse(
            id=new_id("cmpl"), created=now(), model=request.model,
            choices=[CompletionChoice(text=whole.text, finish_reason=finish_reason(whole.finish_reason))],
            usage=usage(whole.prompt_tokens, len(whole.token_ids)),
        )

    @staticmethod
    def _completion_chunk(head: dict, text: str | None, reason: str | None, usage_: Usage | None, first: bool) -> str:
        choices = [] if text is None else [CompletionChoice(text=text, finish_reason=reason)]
        return CompletionResponse(**head, choices=choices, usage=usage_).model_dump_json()

    # -- chat -----------------------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse | AsyncIterator[str]:
        prompt, params, text_param = await self._prepare(request, CHAT_COMPLETIONS)
        if request.stream:
            return await self._stream(request, self._chunks(prompt, request.model, params, text_param), self._chat_chunk)
        whole = await self._whole(prompt, request.model, params, text_param)
        return ChatCompletionResponse(
            id=new_id("chatcmpl"), created=now(), model=request.model,
            choices=[ChatChoice(message=AssistantMessage(content=whole.text), finish_reason=finish_reason(whole.finish_reason))],
            usage=usage(whole.prompt_tokens, len(whole.token_ids)),
        )

    @staticmethod
    def _chat_chunk(head: dict, text: str | None, reason: str | None, usage_: Usage | None, first: bool) -> str:
        if text is None:
            choices = []
        else:
            delta = Delta(role="assistant", content=text) if first else Delta(content=text if text or not reason else None)
            choices = [ChatChunkChoice(delta=delta, finish_reason=reason)]
        return ChatCompletionChunk(**head, choices=choices, usage=usage_).model_dump_json()

    # -- streaming --------------------------------------------------------------------------------------
    async def _stream(self, request: Sampling, chunks: AsyncIterator[GenerationChunk], render_chunk) -> AsyncIterator[str]:
        """Waits for the first chunk (errors there keep their HTTP status), then streams SSE events."""
        first, rest = await prefetch(chunks)
        is_chat = isinstance(request, ChatCompletionRequest)
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
