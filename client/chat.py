"""The FAQ chatbot (`tritonize convert chatbot`), over gRPC: `ask` returns one `Answer`; `stream` yields a
generated answer piece by piece from the decoupled twin NAME_stream (a retrieved answer is one piece).

    with ChatClient("127.0.0.1:8001") as chat:
        a = chat.ask("How do I start the server?", model="faq-bot")        # mode="auto"
        a.text, a.source, a.score, a.candidates                              # source: FAQ id | generated | no-match
        for piece in chat.stream("Tell me a story", model="faq-bot", mode="generative", max_new_tokens=40):
            print(piece, end="")

`history`: the conversation's earlier turns, oldest first, as (role, text) pairs or {"role", "content"}
dicts (role user or assistant): context for a generated answer (the most recent that fit the generator's
context); retrieval reads the question alone.

`mode`: auto (the FAQ answer when the best score >= threshold, otherwise generate with the top-k entries as
context), retrieval (FAQ only: source 'no-match' under the threshold) or generative. `threshold` and `top_k`
override the chatbot's defaults; other keyword arguments are generation parameters (max_new_tokens,
temperature, top_k is `gen_top_k` here, top_p, repetition_penalty, seed, stop), checked by the generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import AsyncIterator, Iterator, Mapping, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from tritonize.client.generation import request_parameters
from tritonize.client.errors import calling, invalid, utf8
from tritonize.client.streams import aio_stream, grpc_stream
from tritonize.client.types import TritonizeError
from tritonize.client.closing import AsyncClosing, Closing

DEFAULT_URL = "127.0.0.1:8001"
MODES = ("auto", "retrieval", "generative")
OUTPUTS = ("ANSWER", "SOURCE", "SCORE", "CANDIDATES", "FINISH_REASON")
GENERATED, NO_MATCH = "generated", "no-match"


@dataclass(frozen=True)
class Candidate:
    id: str
    score: float  # cosine of the question's and the entry's embedder vectors


@dataclass(frozen=True)
class Answer:
    """An answer (or, from `stream_answers`, one piece of it: `text` is the new piece)."""

    text: str
    source: str  # the FAQ entry's id, 'generated' or 'no-match'
    score: float  # the best candidate's score
    candidates: tuple[Candidate, ...]
    finish_reason: str  # retrieved | no-match | eos | length | stop | '' (a piece before the last)

    def __post_init__(self):
        if not isinstance(self.text, str) or not isinstance(self.source, str):
            raise TypeError("Answer.text and Answer.source must be str")
        if not self.source:
            raise ValueError("Answer.source is empty")

    @property
    def generated(self) -> bool:
        return self.source == GENERATED

    @property
    def matched(self) -> bool:
        return self.source not in (GENERATED, NO_MATCH)


History = Sequence["tuple[str, str] | Mapping[str, str]"]


def history_json(history: History) -> str:
    """The HISTORY input: a JSON list of {"role", "content"}, oldest first."""
    turns = []
    for i, turn in enumerate(history):
        if isinstance(turn, Mapping):
            role, content = turn.get("role"), turn.get("content")
        else:
            role, content = turn if isinstance(turn, (tuple, list)) and len(turn) == 2 else (None, None)
        if not isinstance(role, str) or not isinstance(content, str):
            raise invalid(f"history[{i}]", f"must be a (role, text) pair of str or a dict with role and content, got {turn!r}")
        turns.append({"role": role, "content": content})
    return json.dumps(turns, ensure_ascii=False)


def _inputs(text: str, mode: str | None, threshold: float | None, top_k: int | None, history: History | None = None) -> list:
    if not isinstance(text, str):
        raise invalid("text", f"must be str, not {type(text).__name__}")
    tensors = [("TEXT", np.array([utf8(text, "text")], dtype=object), "BYTES")]
    if history:
        tensors.append(("HISTORY", np.array([utf8(history_json(history), "history")], dtype=object), "BYTES"))
    if mode is not None:
        tensors.append(("MODE", np.array([str(mode).encode()], dtype=object), "BYTES"))
    if threshold is not None:
        tensors.append(("THRESHOLD", np.array([threshold], dtype=np.float32), "FP32"))
    if top_k is not None:
        tensors.append(("TOP_K", np.array([top_k], dtype=np.int64), "INT64"))
    out = []
    for name, data, dtype in tensors:
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(data)
        out.append(t)
    return out


def _parameters(gen: dict) -> dict:
    gen = dict(gen)
    if "gen_top_k" in gen:  # top_k names the candidates here; the generator's top-k sampling is gen_top_k
        gen["top_k"] = gen.pop("gen_top_k")
    return request_parameters(gen)


def _answer(result) -> Answer:
    def text(name: str) -> str:
        return result.as_numpy(name)[0].decode("utf-8")

    candidates = tuple(Candidate(c["id"], float(c["score"])) for c in json.loads(text("CANDIDATES")))
    return Answer(text("ANSWER"), text("SOURCE"), float(result.as_numpy("SCORE")[0]), candidates, text("FINISH_REASON"))


def _stream_request(model: str, text: str, mode, threshold, top_k, history, gen: dict) -> dict:
    return {"model_name": f"{model}_stream", "inputs": _inputs(text, mode, threshold, top_k, history), "parameters": _parameters(gen),
            "enable_empty_final_response": True}


def _piece(result) -> Answer | None:
    return None if result.as_numpy("ANSWER") is None else _answer(result)  # None: an empty final response


def join(pieces: list[Answer]) -> Answer:
    """One Answer from streamed pieces."""
    if not pieces:
        raise TritonizeError("the stream ended without an answer")
    last = pieces[-1]
    return Answer("".join(p.text for p in pieces), last.source, last.score, last.candidates, last.finish_reason)


class ChatClient(Closing):
    """Blocking chat client; safe from many threads (gRPC channels are)."""

    def __init__(self, url: str | None = None, timeout_s: float = 300.0, headers: dict | None = None):
        self.url = url or DEFAULT_URL
        self.timeout_s = timeout_s
        self.headers = headers
        self._client = grpcclient.InferenceServerClient(self.url)

    def ask(self, text: str, *, model: str, mode: str | None = None, threshold: float | None = None, top_k: int | None = None,
            history: History | None = None, **gen) -> Answer:
        with calling(model, self.url):
            result = self._client.infer(model, _inputs(text, mode, threshold, top_k, history), outputs=[grpcclient.InferRequestedOutput(o) for o in OUTPUTS],
                                        parameters=_parameters(gen) or None, headers=self.headers, client_timeout=self.timeout_s)
        return _answer(result)

    def stream_answers(self, text: str, *, model: str, mode: str | None = None, threshold: float | None = None,
                       top_k: int | None = None, history: History | None = None, **gen) -> Iterator[Answer]:
        """Each response of NAME_stream as an Answer whose text is the new piece."""
        request = _stream_request(model, text, mode, threshold, top_k, history, gen)
        for result in grpc_stream(self.url, request, model=f"{model}_stream", timeout_s=self.timeout_s, headers=self.headers):
            piece = _piece(result)
            if piece is not None:
                yield piece

    def stream(self, text: str, *, model: str, **kwargs) -> Iterator[str]:
        """The answer's text, piece by piece (a piece never ends inside a UTF-8 character)."""
        for piece in self.stream_answers(text, model=model, **kwargs):
            if piece.text:
                yield piece.text

    def close(self) -> None:
        self._client.close()


class AsyncChatClient(AsyncClosing):
    """asyncio chat client with the same methods, awaited (`stream`/`stream_answers` are async iterators)."""

    def __init__(self, url: str | None = None, timeout_s: float = 300.0, headers: dict | None = None):
        self.url = url or DEFAULT_URL
        self.timeout_s = timeout_s
        self.headers = headers
        self._client = grpcaio.InferenceServerClient(self.url)

    async def ask(self, text: str, *, model: str, mode: str | None = None, threshold: float | None = None,
                  top_k: int | None = None, history: History | None = None, **gen) -> Answer:
        with calling(model, self.url):
            result = await self._client.infer(model, _inputs(text, mode, threshold, top_k, history),
                                              outputs=[grpcclient.InferRequestedOutput(o) for o in OUTPUTS],
                                              parameters=_parameters(gen) or None, headers=self.headers, client_timeout=self.timeout_s)
        return _answer(result)

    async def stream_answers(self, text: str, *, model: str, mode: str | None = None, threshold: float | None = None,
                             top_k: int | None = None, history: History | None = None, **gen) -> AsyncIterator[Answer]:
        request = _stream_request(model, text, mode, threshold, top_k, history, gen)
        async for result in aio_stream(self._client, request, model=f"{model}_stream", timeout_s=self.timeout_s,
                                       headers=self.headers, url=self.url):
            piece = _piece(result)
            if piece is not None:
                yield piece

    async def stream(self, text: str, *, model: str, **kwargs) -> AsyncIterator[str]:
        async for piece in self.stream_answers(text, model=model, **kwargs):
            if piece.text:
                yield piece.text

    async def close(self) -> None:
        await self._client.close()
