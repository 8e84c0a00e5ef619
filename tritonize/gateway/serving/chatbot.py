"""POST /v1/completions and /v1/chat/completions on an FAQ chatbot (`tritonize convert chatbot`), through
AsyncChatClient: a one-shot request goes to NAME, a streamed one to NAME_stream.

What the chatbot gets:
- the question: a completion's `prompt`; a chat's last message, which must be the user's;
- a chat's earlier user and assistant messages, as the conversation's history: context for a generated
  answer (the most recent turns that fit the generator's context); an FAQ match reads the question alone;
- the generation parameters it forwards to its generator, checked there with the generator's own limits:
  `max_tokens` (or `max_completion_tokens`) as max_new_tokens, `temperature`, `top_p`, `top_k` (the
  generator's top-k sampling), `repetition_penalty`, `seed` and `stop`.
It answers as its converter configured it (mode auto, its threshold and its number of FAQ candidates):
an FAQ entry's answer whole when the best match reaches the threshold (sampling parameters, `stop` and
`max_tokens` shape only a generated answer), otherwise an answer generated with the closest entries as
context. `finish_reason` is "stop" for an FAQ answer, the generator's reason for a generated one.

What it does not use: system, developer and tool messages (the chatbot's prompt is its converter's
template, with no place for instructions).

What it refuses (400 naming the parameter): `messages` ending with another role than the user's,
`add_generation_prompt: false`, and `stream_options.include_usage` (the chatbot counts no tokens, so its
responses carry no `usage`).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncGenerator

from tritonize.client import AsyncChatClient, GenerationChunk
from tritonize.gateway.errors import bad_param
from tritonize.gateway.protocol import ChatCompletionRequest, CompletionRequest, Usage
from tritonize.gateway.registry import Pipeline
from tritonize.gateway.serving.text import TextServing


HISTORY_ROLES = ("user", "assistant")


def question(request: CompletionRequest | ChatCompletionRequest) -> tuple[str, str]:
    """The question the chatbot answers and the request field it came from."""
    if not isinstance(request, ChatCompletionRequest):
        return request.text, "prompt"
    last = request.messages[-1]
    if last.role != "user":
        raise bad_param("messages", f"a chatbot answers the last message, which must be the user's question; the last "
                                    f"message here is the {last.role}'s")
    if not request.add_generation_prompt:
        raise bad_param("add_generation_prompt", "a chatbot always answers: add_generation_prompt must be true")
    return last.text, "messages"


def generation_parameters(request: CompletionRequest | ChatCompletionRequest) -> dict:
    """The generator's parameters the chatbot forwards, as AsyncChatClient's keyword arguments."""
    if request.include_usage:
        raise bad_param("stream_options", "stream_options.include_usage is not supported on a chatbot: it counts no tokens")
    params = request.sampling()
    if "top_k" in params:  # the chatbot's own top_k is its number of FAQ candidates; the generator's is gen_top_k
        params["gen_top_k"] = params.pop("top_k")
    if isinstance(request, ChatCompletionRequest):
        history = [(m.role, m.text) for m in request.messages[:-1] if m.role in HISTORY_ROLES]
        if history:
            params["history"] = history
    return params


class ChatbotServing(TextServing):
    def __init__(self, client: AsyncChatClient):
        self.client = client

    def prepare(self, request: CompletionRequest | ChatCompletionRequest, pipeline: Pipeline) -> tuple[str, str, dict]:
        asked, text_param = question(request)
        return asked, text_param, generation_parameters(request)

    async def one_shot(self, sent: str, model: str, params: dict) -> tuple[str, str | None, Usage | None]:
        answer = await self.client.ask(sent, model=model, **params)
        return answer.text, answer.finish_reason, None  # no usage: the chatbot counts no tokens

    async def pieces(self, sent: str, model: str, params: dict) -> AsyncGenerator[GenerationChunk, None]:
        """NAME_stream's answer pieces (an FAQ answer is one piece)."""
        async with aclosing(self.client.stream_answers(sent, model=model, **params)) as answers:
            async for piece in answers:
                yield GenerationChunk(piece.text, finish_reason=piece.finish_reason or None)
