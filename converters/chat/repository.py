"""A chatbot's two Triton models: NAME (one response per question) and NAME_stream (decoupled: a generated
answer piece by piece). Both are Python-backend models running `tritonize.runtime.chat.chatbot`; the FAQ,
its vectors, the index, the prompt template and the generator's tokenizer are stored once, in NAME's
version folder, and NAME_stream reads them there.

Inputs: TEXT (BYTES [1]); optional MODE (BYTES [1]), THRESHOLD (FP32 [1]), TOP_K (INT64 [1]), HISTORY (BYTES [1]:
the earlier turns as JSON, see tritonize.runtime.chat.request).
Outputs: ANSWER, SOURCE, CANDIDATES, FINISH_REASON (BYTES [1]); SCORE (FP32 [1]).
Generation parameters are request parameters, passed through to the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tritonize.contract.chat import Chatbot, ChatSettings
from tritonize.converters.repository import mc, shim, tensor_in, tensor_out, with_parameters, write_model
from tritonize.families import CHAT

SHIMS = {False: CHAT.runtime.served["model"], True: CHAT.runtime.served["stream"]}  # streaming -> served class


@dataclass(frozen=True)
class ChatbotSpec:
    """Everything the writer needs; checked on construction (by the contract's classes)."""

    name: str
    embedder: str
    generator: str
    generator_family: str  # decoder | encoder-decoder
    generator_limits: dict = field(default_factory=dict)  # contract.chat.GENERATOR_LIMITS, from the generator's config
    index: str = Chatbot.index
    threshold: float = ChatSettings.threshold
    top_k: int = ChatSettings.top_k
    max_top_k: int = ChatSettings.max_top_k
    max_question_bytes: int = ChatSettings.max_question_bytes
    workers: int = Chatbot.workers
    max_in_flight: int = Chatbot.max_in_flight
    faiss_ef_search: int = Chatbot.faiss_ef_search

    def __post_init__(self):
        if not -1.0 <= self.threshold <= 1.0:  # in the words of `convert chatbot --threshold`; the contract checks the rest
            raise ValueError(f"threshold must be a cosine score in [-1, 1], got {self.threshold}")
        self.parameters()
        if self.name in (self.embedder, self.generator) or f"{self.name}_stream" in (self.embedder, self.generator):
            raise ValueError(f"the chatbot's name {self.name!r} must differ from its embedder's and generator's")

    @property
    def stream_name(self) -> str:
        return f"{self.name}_stream"

    def parameters(self) -> Chatbot:
        settings = ChatSettings(self.threshold, self.top_k, self.max_top_k, self.max_question_bytes)
        return Chatbot(self.embedder, self.generator, self.generator_family, self.name, settings, self.generator_limits, self.index,
                       self.workers, self.max_in_flight, self.faiss_ef_search)


def chatbot_config(spec: ChatbotSpec, streaming: bool) -> mc.ModelConfig:
    inputs = [tensor_in("TEXT", "BYTES", [1]), tensor_in("MODE", "BYTES", [1]), tensor_in("THRESHOLD", "FP32", [1]),
              tensor_in("TOP_K", "INT64", [1]), tensor_in("HISTORY", "BYTES", [1])]
    for optional in inputs[1:]:
        optional.optional = True
    outputs = [tensor_out(n, "BYTES", [1]) for n in ("ANSWER", "SOURCE", "CANDIDATES", "FINISH_REASON")]
    outputs.insert(2, tensor_out("SCORE", "FP32", [1]))
    config = mc.ModelConfig(
        name=spec.stream_name if streaming else spec.name,
        backend="python",
        max_batch_size=0,  # one question per request; concurrency comes from worker threads, batching from the embedder
        input=inputs,
        output=outputs,
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=streaming),
        instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
    )
    params = spec.parameters().to_params(streaming)
    return with_parameters(config, params)


def write_chatbot(repository: Path, spec: ChatbotSpec, files: dict[str, Path | str | bytes]) -> list[Path]:
    """Both models; the data files go to NAME/1/."""
    return [
        write_model(repository, chatbot_config(spec, streaming=False), {"model.py": shim(SHIMS[False]), **files}),
        write_model(repository, chatbot_config(spec, streaming=True), {"model.py": shim(SHIMS[True])}),
    ]
