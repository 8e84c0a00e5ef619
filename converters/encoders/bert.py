"""BERT-family encoders (BERT, RoBERTa, DistilBERT, MiniLM) -> ONNX -> a served Triton ensemble.

Export with Optimum (batch and sequence axes dynamic), optional ONNX Runtime transformer fusions, a
parity check against PyTorch on real tokenized inputs of several lengths and batch sizes, optional int8
(`quantize.py`: calibrated, checked against fp32 on held-out texts), then the repository writer. A
second run with the same source and options reuses what the first wrote.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.contract.encoders import UNFUSED_AT_LOAD
from tritonize.converters.base import Conversion, ParityError
from tritonize.converters.checkpoints import resolve, served_name
from tritonize.converters.encoders.calibration import text_sets
from tritonize.converters.encoders.quantize import Int8Options, check_floor
from tritonize.converters.encoders.quantize import accuracy as int8_accuracy
from tritonize.converters.encoders.quantize import quantize as quantize_graph
from tritonize.converters.encoders.repository import check_engine, encoder_pipeline, write_encoder_pipeline
from tritonize.converters.encoders.architectures import UnsupportedArchitecture, check_architecture
from tritonize.converters.encoders.st_modules import SentenceModules, checkpoint_folder, read_sentence_modules, with_prompt_length
from tritonize.converters.encoders.st_parity import EmbeddingParity, check as check_embedding_parity, sentence_transformers_parity
from tritonize.converters.encoders.tensorrt import PRECISIONS, to_fp16
from tritonize.converters.repository import Batching

TASKS = {"embedding": "feature-extraction", "classification": "text-classification"}
# Max abs error allowed between ONNX Runtime fp32 and PyTorch (hidden states or logits); measured
# errors are ~4e-6 on all-MiniLM-L6-v2 with the fusions applied.
FP32_TOLERANCE = 1e-4
# Max abs error of the fp16 graph (TensorRT engine source) vs fp32, relative to the output's scale;
# all-MiniLM-L6-v2 measured 6e-4 on CPU.
FP16_RELATIVE_TOLERANCE = 1e-2
ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "mpnet"}  # positions start after the pad id (see position_limit)

VALIDATION_TEXTS = [
    "Hi.",
    "The quick brown fox jumps over the lazy dog.",
    "Triton batches requests of different lengths together when the model allows ragged batches.",
    "A much longer passage of text, written so that the tokenizer produces many more tokens than the "
    "other examples do; it talks about latency, throughput, queues, replicas and the cost of padding "
    "short sentences up to the length of the longest one in a batch.",
    "Zahlen wie 42 und 3,14 — und Satzzeichen!?",
    "",
]


@dataclass
class ConversionReport:
    name: str
    task: str
    source: str
    repository: str
    reused: bool
    max_abs_error: float
    tolerance: float
    optimized: bool
    quantized: bool
    int8_accuracy: dict = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = "onnxruntime"
    fp16_relative_error: float | None = None  # tensorrt engine, fp16: the graph TensorRT builds vs fp32
    embedding: str = ""  # what the served embedding is: the checkpoint's sentence-transformers modules, or the default
    st_min_cosine: float | None = None  # served vs SentenceTransformer.encode (None: not compared)
    st_max_norm_error: float | None = None  # relative


def position_limit(config) -> int:
    """Tokens the position table holds. RoBERTa-family models number positions pad_token_id + 1,
    pad_token_id + 2, ... (padding itself sits at pad_token_id), so they hold
    max_position_embeddings - pad_token_id - 1: the familiar "- 2" only when pad_token_id is 1."""
    if config.model_type in ROBERTA_LIKE:
        return config.max_position_embeddings - (config.pad_token_id or 0) - 1
    return config.max_position_embeddings


def max_sequence_length(tokenizer, config, source: str) -> int:
    limits = [position_limit(config)]
    if tokenizer.model_max_length < 100_000:
        limits.append(tokenizer.model_max_length)
    sbert = Path(source) / "sentence_bert_config.json"  # sentence-transformers' own limit, when present
    if sbert.exists():
        limits.append(int(json.loads(sbert.read_text()).get("max_seq_length", limits[0])))
    return min(limits)


def read_embedding(model: str, source: str, task: str) -> tuple[SentenceModules, str]:
    """An embedder's sentence-transformers modules (the default for a plain checkpoint) and the folder
    transformers loads from (an older checkpoint keeps it in 0_Transformer/)."""
    if task != "embedding":
        return SentenceModules(), source
    folder = checkpoint_folder(source)
    modules = read_sentence_modules(folder)
    return modules, str(folder / modules.transformer_path) if modules.transformer_path else source


def hidden_states(session, tokenizer, max_length: int):
    """texts -> (ONNX Runtime hidden states, attention mask), tokenized as the served step does."""
    def run(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        mask = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")["attention_mask"]
        return ort_outputs(session, tokenizer, texts, max_length), mask
    return run


def embedding_parity(conversion, session, source: str) -> EmbeddingParity | None:
    """The served embedding (head included) vs SentenceTransformer.encode, checked against its floor."""
    c = conversion
    c.log(f"{c.name}: embedding: {c.modules.describe()}")
    if not c.modules.sentence_transformers:
        return None
    parity = sentence_transformers_parity(source, hidden_states(session, c.tokenizer, c.max_length), c.modules,
                                          validation_batches(c.max_length), c.log, c.name)
    if parity is not None:
        c.log(f"{c.name}: served embeddings vs SentenceTransformer.encode on {parity.texts} texts: min cosine {parity.min_cosine:.7f}, "
              f"max relative norm error {parity.max_norm_error:.1e}")
        check_embedding_parity(parity, c.name)
    return parity


def torch_reference(model, tokenizer, texts: list[str], task: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch outputs (last_hidden_state or logits) and the attention mask."""
    import torch

    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc)
    result = out.last_hidden_state if task == "embedding" else out.logits
    return result.numpy(), enc["attention_mask"].numpy()


def ort_outputs(session, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
    return session.run(None, feeds)[0]


def compare(a: np.ndarray, b: np.ndarray, mask: np.ndarray, task: str) -> float:
    """Max abs error, over real tokens only for hidden states (padding positions are not served)."""
    if task == "embedding":
        keep = mask.astype(bool)
        return float(np.abs(a[keep] - b[keep]).max())
    return float(np.abs(a - b).max())


def validation_batches(max_length: int) -> list[list[str]]:
    long = " ".join(["token"] * (max_length + 50))  # longer than the model: exercises truncation
    texts = VALIDATION_TEXTS + [long]
    return [[texts[1]], texts[2:5], texts, [long, texts[0]]]


def max_error(session, model, tokenizer, task: str, max_length: int) -> float:
    worst = 0.0
    for batch in validation_batches(max_length):
        ref, mask = torch_reference(model, tokenizer, batch, task, max_length)
        worst = max(worst, compare(ort_outputs(session, tokenizer, batch, max_length), ref, mask, task))
    return worst


def fp16_relative_error(fp16, fp32, tokenizer, task: str, max_length: int) -> float:
    """Max abs difference of the fp16 graph from the fp32 one, over the output's largest magnitude."""
    worst = 0.0
    for batch in validation_batches(max_length):
        mask = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")["attention_mask"]
        a, b = ort_outputs(fp32, tokenizer, batch, max_length), ort_outputs(fp16, tokenizer, batch, max_length)
        worst = max(worst, compare(b, a, mask, task) / max(1.0, float(np.abs(a).max())))
    return worst


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED_AT_LOAD)


def optimize_graph(src: Path, dst: Path, config) -> bool:
    """ONNX Runtime's transformer fusions (attention, LayerNorm, GELU); False if they do not apply."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fusions = FusionOptions("bert")
    fusions.enable_skip_layer_norm = fusions.enable_bias_skip_layer_norm = False  # slower on CPU: see UNFUSED_AT_LOAD
    heads = getattr(config, "num_attention_heads", getattr(config, "n_heads", 0))
    hidden = getattr(config, "hidden_size", getattr(config, "dim", 0))
    try:
        optimized = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, optimization_options=fusions, opt_level=1)
    except Exception:  # an architecture the fusions do not know: serve the plain export
        return False
    optimized.save_model_to_file(str(dst))
    return True


class BertConversion(Conversion[ConversionReport]):
    family, report_type, tolerance = "encoders", ConversionReport, FP32_TOLERANCE

    def __init__(self, model: str, task: str, repository: Path, name: str | None, optimize: bool, quantize: bool, batching: Batching,
                 flavour: str, tolerance: float, force: bool, log: Callable[[str], None], engine: str, precision: str,
                 int8: Int8Options | None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, not {task!r}")
        name = served_name(model, name)  # checked before anything is written
        check_engine(flavour, engine)
        if engine == "tensorrt":
            if quantize:
                raise ValueError("quantize makes ONNX Runtime int8 ops, which TensorRT cannot parse: use precision fp16 instead")
            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
            optimize = False  # ORT's fusions emit com.microsoft ops TensorRT cannot parse; TensorRT fuses on its own
        self.texts = None
        if quantize:
            int8 = int8 or Int8Options()
            self.texts = text_sets(int8.calibration_texts, int8.calibration_limit)  # a bad file fails before any work
        super().__init__(name, resolve(model), repository, force, log, tolerance)
        self.model, self.task, self.optimize, self.quantize, self.int8 = model, task, optimize, quantize, int8
        self.batching, self.flavour, self.engine, self.precision = batching, flavour, engine, precision

    def options(self) -> dict:
        options = {"task": self.task, "optimize": self.optimize, "quantize": self.quantize, "flavour": self.flavour,
                   "batching": asdict(self.batching)}
        if self.engine != "onnxruntime":  # keeps the reuse key of existing conversions unchanged
            options |= {"engine": self.engine, "precision": self.precision}
        if self.int8 is not None:  # method, calibration texts and floor; fp32 conversions keep their reuse key
            options |= {"int8": self.int8.key(self.texts)}
        return options

    def export(self, tmp: Path) -> None:
        from optimum.exporters.onnx import main_export
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        name = self.name
        self.modules, source = read_embedding(self.model, self.source, self.task)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{self.model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
        self.config = AutoConfig.from_pretrained(source)
        check_architecture(self.config, self.task)
        self.modules = with_prompt_length(self.modules, self.tokenizer)
        self.max_length = min(max_sequence_length(self.tokenizer, self.config, source), self.modules.max_seq_length or 1 << 30)
        self.tmp = tmp
        self.log(f"{name}: exporting {self.model} to ONNX ({TASKS[self.task]}, dynamic batch and sequence)")
        from huggingface_hub.constants import HF_HUB_CACHE

        try:  # Optimum's default cache ignores HF_HUB_CACHE (it reads HUGGINGFACE_HUB_CACHE): pass the one transformers uses
            main_export(source, tmp / "export", task=TASKS[self.task], library_name="transformers", do_validation=False, cache_dir=HF_HUB_CACHE)
        except Exception as e:  # e.g. an architecture Optimum cannot export: refused with its reason
            raise UnsupportedArchitecture(f"{name}: Optimum could not export {self.model} (model_type {self.config.model_type!r}) "
                                          f"for {self.task}: {e}") from e
        self.onnx_path = tmp / "export" / "model.onnx"
        self.optimized = False
        if self.optimize:
            self.optimized = optimize_graph(self.onnx_path, tmp / "model_opt.onnx", self.config)
            self.onnx_path = tmp / "model_opt.onnx" if self.optimized else self.onnx_path
            self.log(f"{name}: ORT transformer fusions {'applied' if self.optimized else 'not applicable, plain export kept'}")
        self.torch_model = (AutoModel if self.task == "embedding" else AutoModelForSequenceClassification).from_pretrained(source).eval()

    def parity(self) -> None:
        """fp32 against PyTorch; then the int8 graph against fp32 (held-out texts) or the fp16 one for TensorRT."""
        name, task, tmp, tokenizer, max_length = self.name, self.task, self.tmp, self.tokenizer, self.max_length
        self.fp32 = fp32 = ort_session(self.onnx_path)
        self.err = max_error(fp32, self.torch_model, tokenizer, task, max_length)
        if self.optimized and not self.err <= self.tolerance:  # fusions that do not fit this architecture exactly: not fatal
            self.log(f"{name}: ORT transformer fusions change the outputs by {self.err:.2e} (> {self.tolerance:.0e}); serving the plain export")
            self.onnx_path, self.optimized = tmp / "export" / "model.onnx", False
            self.fp32 = fp32 = ort_session(self.onnx_path)
            self.err = max_error(fp32, self.torch_model, tokenizer, task, max_length)
        self.log(f"{name}: max abs error vs PyTorch {self.err:.2e} (tolerance {self.tolerance:.0e})")
        if not self.err <= self.tolerance:
            raise ParityError(f"{name}: ONNX output differs from PyTorch by {self.err:.3e} > tolerance {self.tolerance:.0e}")
        self.st_parity = embedding_parity(self, fp32, self.source) if task == "embedding" else None
        self.accuracy: dict = {}
        if self.int8 is not None:
            done = quantize_graph(self.onnx_path, tmp / "model_int8.onnx", tokenizer, max_length, self.texts, self.int8)
            self.onnx_path = tmp / "model_int8.onnx"
            head, prompt = (self.modules.head(), self.modules.prompts.default_prompt) if task == "embedding" else (None, "")
            self.accuracy = done | int8_accuracy(fp32, ort_session(self.onnx_path), tokenizer, task, max_length, self.texts, head, prompt)
            self.log(f"{name}: int8 ({self.int8.method}) vs fp32 on {self.accuracy['held_out_texts']} held-out texts "
                     f"(calibrated on {self.accuracy['calibration_texts']}): " + ", ".join(
                         f"{k} {v:.4f}" for k, v in self.accuracy.items() if isinstance(v, float)))
            if self.int8.enforce_floor:
                check_floor(self.accuracy, task, name)
        self.fp16_error = None
        if self.engine == "tensorrt" and self.precision == "fp16":
            to_fp16(self.onnx_path, tmp / "model_fp16.onnx")
            self.onnx_path = tmp / "model_fp16.onnx"
            self.fp16_error = error = fp16_relative_error(ort_session(self.onnx_path), fp32, tokenizer, task, max_length)
            self.log(f"{name}: fp16 graph for TensorRT, max error vs fp32 {error:.1e} of the output scale "
                     f"(tolerance {FP16_RELATIVE_TOLERANCE:.0e})")
            if not error <= FP16_RELATIVE_TOLERANCE:
                raise ParityError(f"{name}: the fp16 graph differs from fp32 by {error:.2e} of the output scale "
                                  f"> {FP16_RELATIVE_TOLERANCE:.0e}; convert with precision fp32")

    def report(self) -> ConversionReport:
        return ConversionReport(
            name=self.name, task=self.task, source=str(self.model), repository=str(self.repository), reused=False, max_abs_error=self.err,
            tolerance=self.tolerance, optimized=self.optimized, quantized=self.quantize, int8_accuracy=self.accuracy,
            seconds=self.seconds(), engine=self.engine, fp16_relative_error=self.fp16_error,
            embedding=self.modules.describe() if self.task == "embedding" else "",
            st_min_cosine=self.st_parity.min_cosine if self.st_parity else None,
            st_max_norm_error=self.st_parity.max_norm_error if self.st_parity else None,
        )

    def write(self, report: ConversionReport) -> dict:
        tokenizer_json = self.tmp / "tokenizer.json"
        self.tokenizer.backend_tokenizer.save(str(tokenizer_json))
        pipeline = encoder_pipeline(self.name, self.task, self.config, self.tokenizer, self.max_length, self.batching,
                                    graph_inputs=[i.name for i in self.fp32.get_inputs()], flavour=self.flavour, engine=self.engine,
                                    precision=self.precision, modules=self.modules)
        return write_encoder_pipeline(self.repository, pipeline, self.onnx_path, tokenizer_json, dense=self.modules.dense)

    def written(self, report: ConversionReport) -> str:
        return f"{self.name}: wrote {self.repository / self.name} and its steps in {report.seconds:.0f} s"


def convert_bert(
    model: str,
    task: str = "embedding",
    repository: Path = Path("model_repository"),
    name: str | None = None,
    optimize: bool = True,
    quantize: bool = False,
    batching: Batching | None = None,
    flavour: str = "fused",
    tolerance: float = FP32_TOLERANCE,
    force: bool = False,
    log: Callable[[str], None] = print,
    engine: str = "onnxruntime",
    precision: str = "fp16",
    int8: Int8Options | None = None,
) -> ConversionReport:
    """`int8` (with quantize=True): the method, calibration texts and floor; default Int8Options()."""
    return BertConversion(model, task, Path(repository), name, optimize, quantize, batching or Batching(), flavour, tolerance, force, log,
                          engine, precision, int8 if quantize else None).run()
