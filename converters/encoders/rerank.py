"""Cross-encoders (rerankers) -> ONNX -> one served rerank step: `tritonize convert bert --task rerank`.

A cross-encoder is a sequence-classification checkpoint with one logit, the relevance of a (query,
document) pair. The export, the ORT fusions and the logits' parity against PyTorch are the encoder
converter's (`BertConversion`, on the classification graph); what differs:
- the checkpoint must have one label (`CrossEncoder.rank` refuses others too: several logits are no
  single relevance score), and its activation is what `CrossEncoder.predict` applies: sentence-
  transformers' `activation_fn` (config_sentence_transformers.json, else config.json's
  `sentence_transformers` block, else the pre-4.0 `sbert_ce_default_activation_function`), sigmoid
  when none is set; an activation we cannot serve is refused by name;
- parity: the served code (`tritonize.runtime.encoders.rerank.Reranker`: tokenizer on pairs, length
  buckets, ONNX Runtime, activation) against `CrossEncoder.predict` on pairs of mixed lengths, a
  document and a query longer than the model included; PyTorch with the same activation where
  sentence-transformers cannot load the checkpoint. The report gives the figure and the reference;
- the repository holds one Python-backend model `NAME` (QUERY, DOCUMENTS -> SCORES, ORDER,
  TOKEN_COUNT), batched by Triton's dynamic batcher over ragged DOCUMENTS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.contract.encoders import ACTIVATION_PATHS, Buckets, Reranking, Served, Tokenizing
from tritonize.converters.base import ParityError
from tritonize.converters.encoders.bert import FP32_TOLERANCE, BertConversion, ConversionReport
from tritonize.converters.encoders.repository import WARMUP_TEXT, WARMUP_TEXT_FILE, remove_previous
from tritonize.converters.repository import Batching, mc, python_step, shim, tensor_in, tensor_out, write_model
from tritonize.families import ENCODERS

QUERIES = ["how do I keep latency low under load?", "tiny model", "word " * 90]
DOCUMENTS = [
    "Dynamic batching groups concurrent requests so the engine does more work per call.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "",
    "latency",
    "Set a latency budget, measure p99, and add replicas before the queue grows. " * 12,  # longer than the model
    "Zahlen wie 42 und 3,14 — und Satzzeichen!?",
]


@dataclass
class RerankReport(ConversionReport):
    activation: str = "sigmoid"
    activation_source: str = "default (one label)"
    reference: str = "CrossEncoder.predict"  # what the served scores were checked against
    score_max_abs_error: float = 0.0
    max_documents: int = Reranking.max_documents


def read_json(source: str, filename: str) -> dict | None:
    """A JSON file of a checkpoint folder, or of a hub id (from the cache, or downloaded where there is network)."""
    if Path(source).is_dir():
        path = Path(source) / filename
        return json.loads(path.read_text()) if path.exists() else None
    from transformers.utils import cached_file

    found = cached_file(source, filename, _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(found).read_text()) if found else None


def checkpoint_activation(source: str) -> tuple[str, str]:
    """(activation, where it was read) as CrossEncoder.predict would apply it; refuses what cannot be served."""
    config = read_json(source, "config.json") or {}
    architectures = config.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        raise ValueError(f"{source} is a causal LM ({architectures[0]}); rerank serves sequence-classification cross-encoders only")
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    if labels != 1:
        raise ValueError(f"rerank needs a cross-encoder with one relevance logit (num_labels 1); {source} has {labels} labels, whose "
                         f"logits are no single score: convert it with --task classification")
    found: tuple[str, str] | None = None
    st = read_json(source, "config_sentence_transformers.json") or {}
    if st.get("activation_fn"):
        found = st["activation_fn"], "config_sentence_transformers.json activation_fn"
    elif (config.get("sentence_transformers") or {}).get("activation_fn"):
        found = config["sentence_transformers"]["activation_fn"], "config.json sentence_transformers.activation_fn"
    elif config.get("sbert_ce_default_activation_function"):
        found = config["sbert_ce_default_activation_function"], "config.json sbert_ce_default_activation_function"
    if found is None:
        return "sigmoid", "default (one label)"
    path, where = found
    if path not in ACTIVATION_PATHS:
        raise ValueError(f"{where} is {path!r}; rerank serves {', '.join(ACTIVATION_PATHS)}")
    return ACTIVATION_PATHS[path], where


def validation_sets() -> list[tuple[str, list[str]]]:
    return [(q, DOCUMENTS) for q in QUERIES]


def reference_scores(source: str, torch_model, tokenizer, max_length: int, activation: str) -> tuple[list[np.ndarray], str]:
    """CrossEncoder.predict's scores per validation set; PyTorch with the same activation if sentence-transformers cannot load it."""
    sets = validation_sets()
    try:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(source, device="cpu")
    except Exception:  # not installed, or a checkpoint it cannot load
        model = None
    if model is not None:
        return [np.asarray(model.predict([(q, d) for d in docs], batch_size=4, show_progress_bar=False)) for q, docs in sets], \
            "CrossEncoder.predict"
    import torch

    fn = {"sigmoid": torch.sigmoid, "identity": lambda x: x, "tanh": torch.tanh}[activation]
    out = []
    for q, docs in sets:
        enc = tokenizer([q] * len(docs), docs, truncation="longest_first", max_length=max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out.append(fn(torch_model(**enc).logits[:, 0]).numpy())
    return out, "transformers AutoModelForSequenceClassification + activation"


def rerank_config(name: str, tokenizing: Tokenizing, buckets: Buckets, rerank: Reranking, batching: Batching) -> mc.ModelConfig:
    """One Python-backend model: a request is one query and its documents; the dynamic batcher merges requests."""
    params = {**Served("rerank", tokenizing.max_length).to_params(), **tokenizing.to_params(), **buckets.to_params(), **rerank.to_params()}
    inputs = [tensor_in("QUERY", "BYTES", [1]), tensor_in("DOCUMENTS", "BYTES", [-1], ragged=True)]
    outputs = [tensor_out("SCORES", "FP32", [-1]), tensor_out("ORDER", "INT64", [-1]), tensor_out("TOKEN_COUNT", "INT64", [1])]
    config = python_step(name, inputs, outputs, params, batching, instances=batching.instance_count, entry=True)
    text = mc.ModelWarmup.Input(data_type=mc.TYPE_STRING, dims=[1], input_data_file=WARMUP_TEXT_FILE)
    config.model_warmup.append(mc.ModelWarmup(name="one_pair", batch_size=1, inputs={"QUERY": text, "DOCUMENTS": text}))
    return config


class RerankConversion(BertConversion):
    report_type = RerankReport

    def __init__(self, model: str, repository: Path, name: str | None, optimize: bool, batching: Batching, flavour: str,
                 tolerance: float, force: bool, log: Callable[[str], None], max_documents: int):
        if flavour != "fused":
            raise ValueError(f"rerank is served as one Python-backend step (flavour fused), not {flavour!r}")
        self.rerank = Reranking(max_documents=max_documents)
        # The graph is a sequence classifier's: BertConversion exports it and checks its logits against PyTorch.
        super().__init__(model, "classification", repository, name, optimize, False, batching, "fused", tolerance, force, log,
                         "onnxruntime", "fp16", None)

    def options(self) -> dict:
        return super().options() | {"task": "rerank", "max_documents": self.rerank.max_documents}

    def export(self, tmp: Path) -> None:
        self.activation, self.activation_source = checkpoint_activation(self.source)  # refused before the export
        self.rerank = Reranking(self.activation, self.rerank.max_documents)
        super().export(tmp)

    def tokenizing(self) -> Tokenizing:
        return Tokenizing(self.max_length, pad_token_id=self.tokenizer.pad_token_id or 0)

    def buckets(self) -> Buckets:
        return Buckets(pad_token_id=self.tokenizer.pad_token_id or 0, intra_op_threads=self.batching.intra_op_threads)

    def parity(self) -> None:
        """The logits against PyTorch (BertConversion), then the served scores against CrossEncoder.predict."""
        from tritonize.runtime.encoders.rerank import Reranker

        super().parity()
        self.tokenizer_json = self.tmp / "tokenizer.json"
        self.tokenizer.backend_tokenizer.save(str(self.tokenizer_json))
        reranker = Reranker(self.tokenizer_json, self.onnx_path, self.max_length, self.buckets(), self.activation)
        served = [reranker.score(q, docs) for q, docs in validation_sets()]
        reference, self.reference = reference_scores(self.source, self.torch_model, self.tokenizer, self.max_length, self.activation)
        self.score_error = max(float(np.abs(s - r).max()) for s, r in zip(served, reference))
        self.log(f"{self.name}: scores ({self.activation}, from {self.activation_source}) vs {self.reference}: max abs error "
                 f"{self.score_error:.2e} (tolerance {self.tolerance:.0e})")
        if not self.score_error <= self.tolerance:
            raise ParityError(f"{self.name}: served scores differ from {self.reference} by {self.score_error:.3e} > tolerance {self.tolerance:.0e}")

    def report(self) -> RerankReport:
        base = asdict(super().report()) | {"task": "rerank"}
        return RerankReport(**base, activation=self.activation, activation_source=self.activation_source, reference=self.reference,
                            score_max_abs_error=self.score_error, max_documents=self.rerank.max_documents)

    def write(self, report) -> dict:
        remove_previous(self.repository, self.name)
        config = rerank_config(self.name, self.tokenizing(), self.buckets(), self.rerank, self.batching)
        files = {"model.onnx": self.onnx_path, "model.py": shim(ENCODERS.runtime.served["rerank"]), "tokenizer.json": self.tokenizer_json,
                 f"warmup/{WARMUP_TEXT_FILE}": WARMUP_TEXT}
        write_model(self.repository, config, files)
        return {"pipeline": {"name": self.name, "task": "rerank", "max_length": self.max_length, "activation": self.activation,
                             "max_documents": self.rerank.max_documents, "batching": asdict(self.batching)}}


def convert_rerank(
    model: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    optimize: bool = True,
    batching: Batching | None = None,
    flavour: str = "fused",
    tolerance: float = FP32_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
    max_documents: int = Reranking.max_documents,
) -> RerankReport:
    """A cross-encoder checkpoint (local folder or hub id) as a served rerank pipeline."""
    return RerankConversion(model, Path(repository), name, optimize, batching or Batching(), flavour, tolerance, force, log,
                            max_documents).run()
