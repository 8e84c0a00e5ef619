"""The model families: one entry each, and nothing else lists them.

Every code object is named by an import path ("module:attribute") resolved on use, so this module
imports nothing (no torch, no typer, no circle) and anything may read it. `FAMILIES` is in the order
the CLI registers the families and the demo runs them: the chatbot comes after the encoders and
generators it calls. A new family is one entry here plus its folders in converters/, tritonize/runtime/,
client/ and tests/ (tests/packaging/test_families.py checks each part).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

# The gateway's endpoints that serve a family (tritonize/gateway/routers.py routes them).
EMBEDDINGS = "/v1/embeddings"
COMPLETIONS = "/v1/completions"
CHAT_COMPLETIONS = "/v1/chat/completions"
AUDIO_SPEECH = "/v1/audio/speech"
RERANK = "/v1/rerank"  # Cohere/Jina shape, as text-embeddings-inference, Infinity and vLLM serve it


def resolve(path: str) -> Any:
    """The object an import path names: "package.module:attribute"."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Runtime:
    """What runs inside Triton's Python backend for a family."""

    served: Mapping[str, str]  # step role -> the model class its one-line model.py shim imports
    engines: Mapping[str, tuple[str, ...]]  # backend (onnx, torch) -> engine class(es); none: it calls other families' models


@dataclass(frozen=True)
class Family:
    name: str  # its folder in converters/, tritonize/runtime/ and tests/
    aliases: tuple[str, ...]  # `tritonize convert ALIAS`
    tasks: tuple[str, ...]  # the `task` parameter its converters write into a pipeline's config (the gateway's "kind")
    converters: Mapping[str, str]  # alias -> entry point (the default engine, ONNX Runtime)
    torch_converter: str | None  # entry point for `--device` (the PyTorch engine); None: no engine of its own
    runtime: Runtime
    client: str
    async_client: str
    endpoints: Mapping[str, tuple[str, ...]]  # gateway endpoint -> the tasks of this family it serves there
    cli: str  # register(convert_app, infer_app, family): its `convert` and `infer` subcommands
    demo: str  # its DemoStep

    def converter(self, alias: str | None = None, torch: bool = False) -> Any:
        """The entry point `convert ALIAS` runs (the first alias by default); torch: the `--device` one."""
        if torch:
            if self.torch_converter is None:
                raise ValueError(f"the {self.name} family has no PyTorch engine")
            return resolve(self.torch_converter)
        return resolve(self.converters[alias or self.aliases[0]])

    def register(self, convert_app: Any, infer_app: Any) -> None:
        resolve(self.cli)(convert_app, infer_app, self)

    def demo_step(self) -> Any:
        return resolve(self.demo)


ENCODERS = Family(
    name="encoders",
    aliases=("bert",),
    tasks=("embedding", "classification", "rerank"),
    converters={"bert": "tritonize.converters.encoders.bert:convert_bert"},
    torch_converter="tritonize.converters.encoders.weights:convert_bert_torch",
    runtime=Runtime(
        served={
            "tokenizer": "tritonize.runtime.encoders.tokenizer:TokenizerStep",
            "model": "tritonize.runtime.encoders.encoder:EncoderStep",
            "fused": "tritonize.runtime.encoders.fused:FusedEncoderStep",
            "embedding": "tritonize.runtime.encoders.postprocess:EmbeddingPostprocess",
            "classification": "tritonize.runtime.encoders.postprocess:ClassificationPostprocess",
            "rerank": "tritonize.runtime.encoders.rerank:RerankStep",  # a cross-encoder: one fused step
        },
        engines={
            "onnx": ("tritonize.runtime.encoders.engine_onnx:OnnxEncoder",),
            "torch": ("tritonize.runtime.encoders.engine_torch:TorchEncoder",),
        },
    ),
    client="tritonize.client:Client",
    async_client="tritonize.client:AsyncClient",
    endpoints={EMBEDDINGS: ("embedding",), RERANK: ("rerank",)},  # a classifier has no OpenAI endpoint
    cli="tritonize.commands.encoders:register",
    demo="tritonize.commands.encoders:DEMO",
)

GENERATION = Family(
    name="generation",
    aliases=("gpt2", "t5"),
    tasks=("generation",),
    converters={
        "gpt2": "tritonize.converters.generation.gpt2:convert_gpt2",
        "t5": "tritonize.converters.generation.t5:convert_t5",
    },
    torch_converter="tritonize.converters.generation.weights:convert_generator_torch",
    runtime=Runtime(
        served={"model": "tritonize.runtime.generation.step:GenerationStep"},
        engines={  # decoder-only (GPT-2), encoder-decoder (T5)
            "onnx": ("tritonize.runtime.generation.engine_onnx:CausalLM", "tritonize.runtime.generation.engine_onnx:Seq2SeqLM"),
            "torch": ("tritonize.runtime.generation.engine_torch:TorchCausalLM",
                      "tritonize.runtime.generation.engine_torch:TorchSeq2SeqLM"),
        },
    ),
    client="tritonize.client:GenerationClient",
    async_client="tritonize.client:AsyncGenerationClient",
    endpoints={COMPLETIONS: ("generation",), CHAT_COMPLETIONS: ("generation",)},
    cli="tritonize.commands.generation:register",
    demo="tritonize.commands.generation:DEMO",
)

SPEECH = Family(
    name="speech",
    aliases=("tts",),
    tasks=("speech",),
    converters={"tts": "tritonize.converters.speech.vits:convert_tts"},
    torch_converter="tritonize.converters.speech.weights:convert_tts_torch",
    runtime=Runtime(
        served={
            "frontend": "tritonize.runtime.speech.frontend:FrontendStep",
            "model": "tritonize.runtime.speech.synthesis:SynthesisStep",
            "audio": "tritonize.runtime.speech.audio:AudioStep",
            "stream": "tritonize.runtime.speech.stream:StreamingSpeechStep",
        },
        engines={
            "onnx": ("tritonize.runtime.speech.engine_onnx:VitsEngine",),
            "torch": ("tritonize.runtime.speech.engine_torch:TorchVitsEngine",),
        },
    ),
    client="tritonize.client:SpeechClient",
    async_client="tritonize.client:AsyncSpeechClient",
    endpoints={AUDIO_SPEECH: ("speech",)},
    cli="tritonize.commands.speech:register",
    demo="tritonize.commands.speech:DEMO",
)

CHAT = Family(
    name="chat",
    aliases=("chatbot",),
    tasks=("chat",),
    converters={"chatbot": "tritonize.converters.chat.convert:convert_chatbot"},
    torch_converter=None,
    runtime=Runtime(
        served={"model": "tritonize.runtime.chat.chatbot:Chatbot", "stream": "tritonize.runtime.chat.chatbot:ChatbotStream"},
        engines={},  # BLS: it calls a served embedder and generator
    ),
    client="tritonize.client:ChatClient",
    async_client="tritonize.client:AsyncChatClient",
    endpoints={COMPLETIONS: ("chat",), CHAT_COMPLETIONS: ("chat",)},  # it takes a generator's inputs
    cli="tritonize.commands.chat:register",
    demo="tritonize.commands.chat:DEMO",
)

FAMILIES: tuple[Family, ...] = (ENCODERS, GENERATION, SPEECH, CHAT)


def served_kinds(endpoint: str) -> tuple[str, ...]:
    """The pipeline kinds (config tasks) a gateway endpoint serves, in the families' order."""
    return tuple(task for family in FAMILIES for task in family.endpoints.get(endpoint, ()))
