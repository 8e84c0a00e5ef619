"""POST /v1/completions and /v1/chat/completions on a generator, through AsyncGenerationClient.

A request becomes one prompt (chat: rendered with the checkpoint's template, see `chat.py`) and the
generator's parameters; the generator runs its own stop strings, limits and seeded sampling, so the text
equals `GenerationClient.generate` for the same prompt and parameters. Responses and streams are built
by `text.py`.
"""

from __future__ import annotations

from typing import AsyncGenerator

from tritonize.client import AsyncGenerationClient, GenerationChunk
from tritonize.gateway.chat import render
from tritonize.gateway.protocol import ChatCompletionRequest, CompletionRequest, Usage
from tritonize.gateway.registry import Pipeline
from tritonize.gateway.serving.text import TextServing, usage


class GenerationServing(TextServing):
    def __init__(self, client: AsyncGenerationClient):
        self.client = client

    def prepare(self, request: CompletionRequest | ChatCompletionRequest, pipeline: Pipeline) -> tuple[str, str, dict]:
        if isinstance(request, ChatCompletionRequest):
            p = pipeline.params
            prompt = render(request.messages, pipeline.chat_template, p.get("bos_token", ""), p.get("eos_token", ""),
                            request.add_generation_prompt)
            return prompt, "messages", request.sampling()
        return request.text, "prompt", request.sampling()

    async def one_shot(self, sent: str, model: str, params: dict) -> tuple[str, str | None, Usage | None]:
        whole = await self.client.generate_chunk(sent, model=model, **params)
        return whole.text, whole.finish_reason, usage(whole.prompt_tokens, len(whole.token_ids))

    async def pieces(self, sent: str, model: str, params: dict) -> AsyncGenerator[GenerationChunk, None]:
        async for chunk in self.client.stream_chunks(sent, model=model, **params):
            yield chunk
