"""Text generation through a tritonize generator (a decoupled model, so always over a gRPC stream).

`GenerationClient(url).stream("Once", model="gpt2", max_new_tokens=20)` yields text pieces as tokens
arrive; `generate(...)` returns the whole text (the server sends it in one response: `stream=false`).
`AsyncGenerationClient` has the same methods for asyncio. Leaving a stream early cancels the request on
the server, which frees its slot.

Parameters (sent as Triton request parameters): max_new_tokens, temperature (0: greedy), top_k, top_p,
repetition_penalty, seed, stop (a string or a list of strings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterator

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from tritonize.client.errors import INT64_MAX, check_seed, invalid, utf8
from tritonize.client.streams import aio_stream, grpc_stream
from tritonize.client.closing import AsyncClosing, Closing

DEFAULT_URL = "127.0.0.1:8001"
# A generator's streamed errors name no code unless its step tags them (client/status.py). Those it
# sends untagged are, but for an internal engine failure, its refusals of the request: bad input.
UNTAGGED = "INVALID_ARG"


@dataclass(frozen=True)
class GenerationChunk:
    """One response: a text piece (possibly '' while a character is incomplete), the token ids it came
    from, on the final response the reason generation ended (eos, length, stop, cancelled), and the
    prompt's length in tokens (None from generators converted before it was sent)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None


def request_parameters(params: dict) -> dict:
    """Triton request parameters; what cannot travel (an int past int64, a seed out of range) is refused
    here with the field's name, before anything is sent. The server checks the ranges of the rest."""
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        if k == "seed":
            v = check_seed(v)
        elif k == "stop" and not isinstance(v, str):
            v = json.dumps(list(v))
        elif isinstance(v, int) and not isinstance(v, bool) and not -INT64_MAX - 1 <= v <= INT64_MAX:
            raise invalid(k, f"must fit in int64, got {v}")
        out[k] = v
    return out


def _request(model: str, prompt: str, params: dict, stream: bool) -> dict:
    if not isinstance(prompt, str):
        raise invalid("prompt", f"must be str, not {type(prompt).__name__}")
    text = grpcclient.InferInput("TEXT", [1], "BYTES")
    text.set_data_from_numpy(np.array([utf8(prompt, "prompt")], dtype=object))
    return {
        "model_name": model,
        "inputs": [text],
        "parameters": request_parameters({**params, "stream": stream}),
        "enable_empty_final_response": True,
    }


def _chunk(result) -> tuple[GenerationChunk, bool]:
    """The chunk in a response and whether it was the final one."""
    final = result.get_response().parameters.get("triton_final_response")
    is_final = bool(final and final.bool_param)
    text = result.as_numpy("TEXT")
    if text is None:  # an empty final response
        return GenerationChunk(""), is_final
    reason = result.as_numpy("FINISH_REASON")[0].decode()
    prompt = result.as_numpy("PROMPT_TOKENS")
    prompt_tokens = int(prompt.reshape(-1)[0]) if prompt is not None else None
    chunk = GenerationChunk(text[0].decode("utf-8"), result.as_numpy("TOKEN_IDS").tolist(), reason or None, prompt_tokens)
    return chunk, is_final or bool(reason)


def _joined(chunks: list[GenerationChunk]) -> GenerationChunk:
    prompt = next((c.prompt_tokens for c in chunks if c.prompt_tokens is not None), None)
    return GenerationChunk("".join(c.text for c in chunks), [t for c in chunks for t in c.token_ids], chunks[-1].finish_reason, prompt)


class GenerationClient(Closing):
    """Blocking generation client; each call opens its own gRPC stream (safe from many threads)."""

    def __init__(self, url: str | None = None, timeout_s: float = 300.0, headers: dict | None = None):
        self.url = url or DEFAULT_URL
        self.timeout_s = timeout_s
        self.headers = headers

    def stream_chunks(self, prompt: str, *, model: str, stream: bool = True, **params) -> Iterator[GenerationChunk]:
        request = _request(model, prompt, params, stream)
        for chunk in grpc_stream(self.url, request, model=model, timeout_s=self.timeout_s, headers=self.headers, parse=_chunk,
                                 untagged=UNTAGGED):
            if chunk.text or chunk.token_ids or chunk.finish_reason:
                yield chunk

    def stream(self, prompt: str, *, model: str, **params) -> Iterator[str]:
        """Text pieces as they become final (a piece never ends inside a UTF-8 character)."""
        for chunk in self.stream_chunks(prompt, model=model, **params):
            if chunk.text:
                yield chunk.text

    def generate_chunk(self, prompt: str, *, model: str, **params) -> GenerationChunk:
        """The whole text, all token ids and the finish reason, in one response."""
        return _joined(list(self.stream_chunks(prompt, model=model, stream=False, **params)))

    def generate(self, prompt: str, *, model: str, **params) -> str:
        return self.generate_chunk(prompt, model=model, **params).text

    def close(self) -> None:
        pass  # nothing held between calls


class AsyncGenerationClient(AsyncClosing):
    """asyncio generation client; one channel, one gRPC stream per call."""

    def __init__(self, url: str | None = None, timeout_s: float = 300.0, headers: dict | None = None):
        self.url = url or DEFAULT_URL
        self.timeout_s = timeout_s
        self.headers = headers
        self._client = grpcaio.InferenceServerClient(self.url)

    async def stream_chunks(self, prompt: str, *, model: str, stream: bool = True, **params) -> AsyncIterator[GenerationChunk]:
        request = _request(model, prompt, params, stream)
        async for chunk in aio_stream(self._client, request, model=model, timeout_s=self.timeout_s, headers=self.headers,
                                      parse=_chunk, url=self.url, untagged=UNTAGGED):
            if chunk.text or chunk.token_ids or chunk.finish_reason:
                yield chunk

    async def stream(self, prompt: str, *, model: str, **params) -> AsyncIterator[str]:
        async for chunk in self.stream_chunks(prompt, model=model, **params):
            if chunk.text:
                yield chunk.text

    async def generate_chunk(self, prompt: str, *, model: str, **params) -> GenerationChunk:
        return _joined([c async for c in self.stream_chunks(prompt, model=model, stream=False, **params)])

    async def generate(self, prompt: str, *, model: str, **params) -> str:
        return (await self.generate_chunk(prompt, model=model, **params)).text

    async def close(self) -> None:
        await self._client.close()
