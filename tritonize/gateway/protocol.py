"""The OpenAI HTTP API's request and response bodies, as pydantic models (nothing else lives here).

Requests forbid unknown fields, so a misspelt or unsupported parameter is a 400 that names it. Fields
OpenAI defines but this gateway cannot honour are accepted only at their neutral value (n=1, echo=false,
no logprobs, no penalties), and refused by name otherwise. Extensions, as in vLLM: `top_k` and
`repetition_penalty` on completions and chat, `seed` on speech.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request
MAX_SPEECH_CHARS = 4096  # OpenAI's own limit
MAX_STOP_STRINGS = 4  # OpenAI's own limit
SPEECH_FORMATS = ("wav", "pcm")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


def unsupported(v: Any) -> Any:
    """For fields OpenAI defines that this gateway does not serve: only absent (null) is accepted."""
    if v is not None:
        raise ValueError("not supported by this gateway")
    return v


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# -- errors and models ----------------------------------------------------------------------------
class ErrorInfo(Body):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(Body):
    error: ErrorInfo


class ModelCard(Body):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tritonize"
    kind: str  # the pipeline config's `task` (one of tritonize.families' tasks)
    max_model_len: int | None = None
    chat_template: bool | None = None  # generators: whether the checkpoint brought one


class ModelList(Body):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(Body):
    prompt_tokens: int = 0
    completion_tokens: int | None = None
    total_tokens: int = 0


# -- embeddings -----------------------------------------------------------------------------------
class EmbeddingRequest(Request):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    # Extensions, named as text-embeddings-inference names them (Client.embed's options): one of the
    # checkpoint's prompts, the raw (un-normalised) vector, a refusal instead of truncation.
    prompt_name: str | None = None
    normalize: bool | None = None
    truncate: bool = True

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if isinstance(v, list):
            if any(isinstance(x, (int, list)) for x in v):
                raise ValueError("token arrays are not accepted: send the text (a string or a list of strings)")
            if not v:
                raise ValueError("the list is empty: send at least one string")
            if len(v) > MAX_EMBEDDING_INPUTS:
                raise ValueError(f"{len(v)} strings; the limit is {MAX_EMBEDDING_INPUTS} per request")
        return v

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(Body):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(Body):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# -- completions and chat -------------------------------------------------------------------------
class StreamOptions(Request):
    include_usage: bool = False


class Sampling(Request):
    """What completions and chat share; `sampling()` turns it into the generator's parameters."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    top_k: int | None = Field(None, ge=0)  # extension
    repetition_penalty: float | None = Field(None, gt=0)  # extension

    @field_validator("n")
    @classmethod
    def _one(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"only n=1 is supported, got {v}")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        if isinstance(v, list) and len(v) > MAX_STOP_STRINGS:
            raise ValueError(f"{len(v)} stop strings; the limit is {MAX_STOP_STRINGS}")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v):
        if v not in (None, 0):
            raise ValueError("not supported (only 0); use repetition_penalty")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v):
        if v:
            raise ValueError("not supported")
        return v

    def sampling(self, max_tokens: int | None = None) -> dict:
        """The generator's request parameters; those left out take the served model's defaults."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        params = {"max_new_tokens": max_tokens or self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "top_k": self.top_k, "repetition_penalty": self.repetition_penalty, "seed": self.seed, "stop": stop or None}
        return {k: v for k, v in params.items() if v is not None}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool = False
    logprobs: Any = None
    best_of: int | None = None
    suffix: Any = None

    _unsupported = field_validator("logprobs", "suffix")(unsupported)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_text(cls, v: Any) -> Any:
        if isinstance(v, list):
            if any(isinstance(x, (int, list)) for x in v):
                raise ValueError("token arrays are not accepted: send the prompt as text")
            if len(v) != 1:
                raise ValueError(f"send one prompt per request (got {len(v)})")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v):
        if v not in (None, 1):
            raise ValueError(f"only best_of=1 is supported, got {v}")
        return v

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(Request):
    type: Literal["text"]
    text: str


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: Any = None
    tools: list | None = None
    tool_choice: Literal["none"] | None = None
    response_format: dict | None = None
    add_generation_prompt: bool = True  # extension (vLLM's name)

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v:
            raise ValueError("logprobs are not supported")
        return v

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v):
        if v:
            raise ValueError("tool calling is not supported")
        return v

    _unsupported = field_validator("top_logprobs")(unsupported)

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, v):
        if v and v.get("type") != "text":
            raise ValueError("only {'type': 'text'} is supported")
        return v

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_tokens is not None and self.max_completion_tokens is not None and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ: send one")
        return self

    def sampling(self, max_tokens: int | None = None) -> dict:
        return super().sampling(self.max_completion_tokens)


class Choice(Body):
    """What every choice of a completion, a chat completion and a chunk carries besides its content."""

    index: int = 0
    logprobs: None = None
    finish_reason: str | None = None


class Response(Body):
    """What every (chat) completion response and chunk carries besides its choices."""

    id: str
    created: int
    model: str


class CompletionChoice(Choice):
    text: str


class CompletionResponse(Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(Body):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(Choice):
    message: AssistantMessage


class ChatCompletionResponse(Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage | None = None  # None from a chatbot, which counts no tokens


class Delta(Body):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(Choice):
    delta: Delta


class ChatCompletionChunk(Response):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


# -- speech ---------------------------------------------------------------------------------------
class VoiceId(Request):
    id: str


class SpeechRequest(Request):
    model: str
    input: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    voice: str | VoiceId
    response_format: str = "wav"  # OpenAI's default is mp3; this gateway serves wav and pcm
    speed: float | None = Field(None, ge=0.25, le=4.0)
    instructions: Any = None
    stream_format: Literal["audio"] | None = None
    seed: int | None = Field(None, ge=0)  # extension: the voice's noise seed (default 0)

    _unsupported = field_validator("instructions")(unsupported)

    @field_validator("response_format")
    @classmethod
    def _served_format(cls, v: str) -> str:
        if v not in SPEECH_FORMATS:
            raise ValueError(f"{v!r} is not served: use one of {', '.join(SPEECH_FORMATS)} (no mp3/opus/aac/flac encoder ships)")
        return v

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


# -- rerank (the Cohere/Jina shape that text-embeddings-inference, Infinity and vLLM accept) -------
class RerankRequest(Request):
    model: str
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=0)  # None or 0: every document
    return_documents: bool = True  # as Jina and vLLM; Cohere's clients send false to leave them out

    @field_validator("documents", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("the list is empty: send at least one document")
            bad = next((i for i, x in enumerate(v) if not isinstance(x, str)), None)
            if bad is not None:
                raise ValueError(f"documents[{bad}] is a {type(v[bad]).__name__}: send each document as a string")
        return v


class RerankDocument(Body):
    text: str


class RerankResult(Body):
    index: int
    relevance_score: float
    document: RerankDocument | None = None  # left out of the JSON unless return_documents


class RerankUsage(Body):
    total_tokens: int = 0


class RerankResponse(Body):
    id: str = Field(default_factory=lambda: new_id("rerank"))
    object: Literal["rerank"] = "rerank"
    model: str
    results: list[RerankResult]
    usage: RerankUsage
