"""An encoder pipeline's parameters (TEXT -> tokenizer -> engine in length buckets -> pooling or labels),
as the converter writes them on each step (or all of them on the fused step) and the runtime reads them.

- `Served` (ensemble and fused step, also read by the client): the task and the token limit;
- `Labels` (classification postprocess, ensemble and fused step): the label names;
- `Tokenizing` (tokenizer step, fused step): truncation, text size, padding;
- `EngineStep` (model step): the graph output it runs and the tensor it returns;
- `Buckets` (model step, fused step): how one execution's rows are cut into length buckets;
- `Pooling` (embedding postprocess, fused step): the checkpoint's own embedding after the encoder
  (pooling modes, Dense layers, Normalize; see converters/encoders/st_modules.py);
- `Prompts` (ensemble, tokenizer step, fused step; also read by the client): the checkpoint's prompts,
  the default one the tokenizer prepends, and the similarity function the vectors are meant for;
- `Reranking` (rerank step): the activation on a cross-encoder's relevance logit and the documents per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonize.contract.fields import Parameters, at_least

TASKS = ("embedding", "classification", "rerank")
GRAPH_OUTPUT = {"embedding": "last_hidden_state", "classification": "logits", "rerank": "logits"}  # the exported graph's output
STEP_OUTPUT = {"embedding": "TOKEN_EMBEDDINGS", "classification": "LOGITS", "rerank": "LOGITS"}  # the model step's output tensor
# ONNX Runtime's CPU SkipLayerNormalization kernel measured 5.4x slower than Add + LayerNormalization
# ([4, 24, 384], ORT 1.32, one thread: 314 vs 58 µs): 22% of an int8 MiniLM run, 12% of fp32. So the
# converter leaves it unfused offline, and every session on the graph (the converter's parity check,
# the served engine) leaves it out at load.
UNFUSED_AT_LOAD = ["SkipLayerNormFusion"]


@dataclass(frozen=True)
class Served(Parameters):
    task: str
    max_length: int  # tokens per text; longer texts are truncated

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        at_least(self, 1, "max_length")


@dataclass(frozen=True)
class Labels(Parameters):
    labels: tuple[str, ...] = ()  # classification: the label of each logit


@dataclass(frozen=True)
class Tokenizing(Parameters):
    max_length: int
    max_text_bytes: int = 1_000_000
    pad_token_id: int = 0
    pad_to_multiple_of: int = 1  # the native ORT flavour batches equal shapes only, so it pads to buckets
    emit_token_type_ids: bool = False

    def __post_init__(self) -> None:
        at_least(self, 1, "max_length", "max_text_bytes", "pad_to_multiple_of")
        at_least(self, 0, "pad_token_id")


@dataclass(frozen=True)
class EngineStep(Parameters):
    output_name: str  # the graph's output: last_hidden_state (embedding) or logits (classification)
    output_tensor: str  # the step's: TOKEN_EMBEDDINGS or LOGITS

    @classmethod
    def of(cls, task: str) -> "EngineStep":
        return cls(GRAPH_OUTPUT[task], STEP_OUTPUT[task])


@dataclass(frozen=True)
class Buckets(Parameters):
    """See tritonize.runtime.buckets.plan_buckets."""

    pad_token_id: int = 0
    max_padding_ratio: float = 1.25  # padded tokens of a bucket / its real tokens
    min_padding_tokens: int = 8  # per row: short rows may pad this much whatever the ratio
    max_rows_per_run: int = 64
    intra_op_threads: int = 0  # 0: one per core

    def __post_init__(self) -> None:
        at_least(self, 1.0, "max_padding_ratio")
        at_least(self, 1, "max_rows_per_run")
        at_least(self, 0, "pad_token_id", "min_padding_tokens", "intra_op_threads")


# sentence-transformers' pooling modes; several are concatenated in the order given.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
DENSE_ACTIVATIONS = ("identity", "tanh", "relu", "sigmoid")  # what the served numpy Dense computes
DENSE_FILE = "dense_{}.npz"  # layer i's weight [out, in] and bias [out], beside the step that pools
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


@dataclass(frozen=True)
class Pooling(Parameters):
    """The embedding after the encoder: pool (modes concatenated) -> Dense layers -> L2-normalise.
    The default is a plain transformers checkpoint's: mean pooling and normalise."""

    normalize: bool = True  # the checkpoint's Normalize module (dot-product models have none)
    modes: tuple[str, ...] = ("mean",)
    include_prompt: bool = True  # false: the default prompt's tokens are left out of the pooling
    prompt_length: int = 0  # tokens of the default prompt (its trailing special token excluded)
    dense: tuple[str, ...] = ()  # each Dense layer's activation, in order; weights in DENSE_FILE

    def __post_init__(self) -> None:
        if not self.modes or any(m not in POOLING_MODES for m in self.modes):
            raise ValueError(f"modes must be one or more of {', '.join(POOLING_MODES)}, got {self.modes!r}")
        if any(a not in DENSE_ACTIVATIONS for a in self.dense):
            raise ValueError(f"dense activations must be among {', '.join(DENSE_ACTIVATIONS)}, got {self.dense!r}")
        at_least(self, 0, "prompt_length")


@dataclass(frozen=True)
class Prompts(Parameters):
    """config_sentence_transformers.json: named prompts, the one prepended to every text by default
    (None: no prompt) and the similarity function the model was trained for."""

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"

    def __post_init__(self) -> None:
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts: {sorted(self.prompts)}")
        if self.similarity_fn_name not in SIMILARITY_FUNCTIONS:
            raise ValueError(f"similarity_fn_name must be one of {', '.join(SIMILARITY_FUNCTIONS)}, got {self.similarity_fn_name!r}")

    @property
    def default_prompt(self) -> str:
        return self.prompts[self.default_prompt_name] if self.default_prompt_name is not None else ""


# One embedding request's options: Triton request parameters, named as Client.embed's keywords.
EMBED_OPTIONS = {"prompt_name": str, "dimensions": int, "normalize": bool, "truncate": bool}


@dataclass(frozen=True)
class EmbedOptions:
    """Per request: a named prompt (instead of the default one), Matryoshka `dimensions` (the first N,
    re-normalised where the vector is normalised), `normalize` (None: as the checkpoint's Normalize;
    false: the raw pooled vector) and `truncate` (false: a text over the token limit is refused, not cut)."""

    prompt_name: str | None = None
    dimensions: int | None = None
    normalize: bool | None = None
    truncate: bool = True

    @classmethod
    def from_request(cls, params: dict) -> "EmbedOptions":
        """The reader: a request's parameters (decoded JSON); an unknown name or a wrong type names the field."""
        for name, value in params.items():
            kind = EMBED_OPTIONS.get(name)
            if kind is None:
                raise ValueError(f"parameter {name!r} is not an embedding option; known: {', '.join(EMBED_OPTIONS)}")
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"parameter {name} must be {kind.__name__}, got {value!r}")
        return cls(**params)

    def prompt(self, prompts: Prompts) -> str:
        """The text prepended: the named prompt, or the checkpoint's default one; an unknown name lists the known."""
        if self.prompt_name is None:
            return prompts.default_prompt
        if self.prompt_name not in prompts.prompts:
            known = ", ".join(repr(k) for k in sorted(prompts.prompts)) or "none"
            raise ValueError(f"prompt_name {self.prompt_name!r} is not one of this model's prompts: {known}")
        return prompts.prompts[self.prompt_name]

    def check_dimensions(self, size: int) -> None:
        if self.dimensions is not None and not 1 <= self.dimensions <= size:
            raise ValueError(f"dimensions must be between 1 and {size} (this model's embedding size), got {self.dimensions}")


# A cross-encoder's activation on its one relevance logit: sentence-transformers' `activation_fn` import
# path -> the name the rerank step applies (tritonize.runtime.encoders.rerank.ACTIVATIONS).
ACTIVATION_PATHS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}
RERANK_ACTIVATIONS = ("sigmoid", "identity", "tanh")


@dataclass(frozen=True)
class Reranking(Parameters):
    """The rerank step (QUERY and DOCUMENTS -> SCORES, ORDER): CrossEncoder.predict's activation on the
    logit (sigmoid by default for one label) and the most documents one request may carry."""

    activation: str = "sigmoid"
    max_documents: int = 1000  # Cohere's own limit per request

    def __post_init__(self) -> None:
        if self.activation not in RERANK_ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(RERANK_ACTIVATIONS)}, got {self.activation!r}")
        at_least(self, 1, "max_documents")
