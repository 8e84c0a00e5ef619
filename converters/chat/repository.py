"""A chatbot's two Triton models: NAME (one response per question) and NAME_stream (decoupled: a generated
answer piece by piece). Both are Python-backend models running `tritonize.runtime.chat.chatbot`; the FAQ,
its vectors, the index, the prompt template and the generator's tokenizer are stored once, in NAME's
version folder, and NAME_stream reads them there.

Inputs: TEXT (BYTES [1]); optional MODE (BYTES [1]), THRESHOLD (FP32 [1]), TOP_K (INT64 [1]).
Outputs: ANSWER, SOURCE, CANDIDATES, FINISH_REASON (BYTES [1]); SCORE (FP32 [1]).
Generation parameters are request parameters, passed through to the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tritonize.converters.repository import mc, shim, tensor_in, tensor_out, with_parameters, write_model

SHIMS = {False: "tritonize.runtime.chat.chatbot:Chatbot", True: "tritonize.runtime.chat.chatbot:ChatbotStream"}
CALLS_PARAMETER = "tritonize_calls"  # models a BLS model calls; server/control.py drains the caller first
GENERATOR_LIMITS = ("max_context", "max_new_tokens", "default_max_new_tokens", "max_sequences", "max_queue", "max_prompt_bytes")


@dataclass(frozen=True)
class ChatbotSpec:
    """Everything the writer needs; checked on construction."""

    name: str
    embedder: str
    generator: str
    generator_family: str  # decoder | encoder-decoder
    generator_limits: dict = field(default_factory=dict)  # GENERATOR_LIMITS, from the generator's config
    index: str = "exact"
    threshold: float = 0.5
    top_k: int = 3
    max_top_k: int = 20
    max_question_bytes: int = 4_096
    workers: int = 16  # threads waiting on sub-requests at once (concurrent questions the embedder can batch)
    max_in_flight: int = 256  # accepted and unanswered requests; beyond it: UNAVAILABLE, retry later
    faiss_ef_search: int = 64  # HNSW candidates visited per search (recall vs time), index=faiss only

    def __post_init__(self):
        if self.index not in ("exact", "faiss"):
            raise ValueError(f"index must be exact or faiss, not {self.index!r}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine score in [-1, 1], got {self.threshold}")
        if not 1 <= self.top_k <= self.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.max_top_k}, got {self.top_k}")
        for k in ("max_question_bytes", "workers", "max_in_flight", "faiss_ef_search"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        missing = [k for k in ("max_context", "max_new_tokens") if k not in self.generator_limits]
        if missing:
            raise ValueError(f"generator_limits lacks {', '.join(missing)}")
        if self.name in (self.embedder, self.generator) or f"{self.name}_stream" in (self.embedder, self.generator):
            raise ValueError(f"the chatbot's name {self.name!r} must differ from its embedder's and generator's")

    @property
    def stream_name(self) -> str:
        return f"{self.name}_stream"


def chatbot_config(spec: ChatbotSpec, streaming: bool) -> mc.ModelConfig:
    inputs = [tensor_in("TEXT", "BYTES", [1]), tensor_in("MODE", "BYTES", [1]), tensor_in("THRESHOLD", "FP32", [1]),
              tensor_in("TOP_K", "INT64", [1])]
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
    params = {
        # What the pipeline is, for clients and the gateway's model list: on NAME only, as for the
        # speech pipeline (NAME_stream is its streaming twin, not a pipeline of its own).
        **({} if streaming else {"task": "chat"}),
        "embedder": spec.embedder,
        "generator": spec.generator,
        "generator_family": spec.generator_family,
        "data_model": spec.name,
        "index": spec.index,
        "threshold": repr(spec.threshold),
        "top_k": str(spec.top_k),
        "max_top_k": str(spec.max_top_k),
        "max_question_bytes": str(spec.max_question_bytes),
        "workers": str(spec.workers),
        "max_in_flight": str(spec.max_in_flight),
        "faiss_ef_search": str(spec.faiss_ef_search),
        CALLS_PARAMETER: [spec.embedder, spec.generator],
        **{f"generator_{k}": str(v) for k, v in spec.generator_limits.items() if k in GENERATOR_LIMITS},
    }
    return with_parameters(config, params)


def write_chatbot(repository: Path, spec: ChatbotSpec, files: dict[str, Path | str | bytes]) -> list[Path]:
    """Both models; the data files go to NAME/1/."""
    return [
        write_model(repository, chatbot_config(spec, streaming=False), {"model.py": shim(SHIMS[False]), **files}),
        write_model(repository, chatbot_config(spec, streaming=True), {"model.py": shim(SHIMS[True])}),
    ]
