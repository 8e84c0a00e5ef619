"""int8 for BERT-family graphs on ONNX Runtime's CPU path, and an honest report of what it costs.

Both methods start from the fp32 graph (fused or plain), rewrite its activation outliers from the
calibration texts (`outliers.py`), then quantise weights to S8 per output channel (full range: VNNI and
AMX do not need reduce_range) and activations to U8:

- dynamic: activation ranges measured per call (DynamicQuantizeMatMul, QAttention);
- static: activation ranges fixed by calibration (QDQ, MinMax), which ORT fuses into QLinearMatMul.

The accuracy report compares int8 with fp32 on held-out texts (none in the calibration set) and the
conversion stops when it is below the floor, rather than serve a model that answers differently.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonize.converters.encoders.calibration import TextSets

METHODS = ("dynamic", "static")
DEFAULT_METHOD = "dynamic"  # measured on all-MiniLM-L6-v2: see docs/performance.md (int8) and benchmarks/int8_bench.py
# The floors a conversion must meet on the held-out texts, per task.
EMBEDDING_FLOOR = {"min_cosine_vs_fp32": 0.98, "mean_cosine_vs_fp32": 0.995}
CLASSIFICATION_FLOOR = {"label_agreement": 0.95, "max_probability_diff": 0.1}
CALIBRATION_BATCH = 16


class Int8AccuracyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Int8Options:
    method: str = DEFAULT_METHOD
    calibration_texts: Path | None = None  # None: the shipped set
    calibration_limit: int | None = None  # use only the first N calibration texts (tests)
    enforce_floor: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"quantization must be one of {METHODS}, not {self.method!r}")

    def key(self, texts: TextSets) -> dict:
        """What the conversion fingerprint includes."""
        return {"method": self.method, "calibration": texts.digest, "floor": self.enforce_floor}


def tokenized(tokenizer, texts: list[str], names: list[str], max_length: int):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in names}, enc["attention_mask"]


def calibration_batches(tokenizer, texts: list[str], names: list[str], max_length: int):
    """Callable giving (feeds, attention mask) per batch of calibration texts, each time afresh."""
    return lambda: (tokenized(tokenizer, texts[i:i + CALIBRATION_BATCH], names, max_length)
                    for i in range(0, len(texts), CALIBRATION_BATCH))


def data_reader(batches):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next((feeds for feeds, _ in self.it), None)

        def rewind(self):
            self.it = iter(batches())

    return Reader()


def quantize(src: Path, dst: Path, tokenizer, max_length: int, texts: TextSets, options: Int8Options) -> dict:
    """Write the int8 graph of `src` to `dst`; returns what was done (for the report)."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from tritonize.converters.encoders.outliers import rewrite

    model = onnx.load(str(src))
    names = [i.name for i in model.graph.input]
    batches = calibration_batches(tokenizer, texts.calibration, names, max_length)
    rewrites = rewrite(model, batches)
    embed_ln = [n.name for n in model.graph.node if n.op_type == "EmbedLayerNormalization"]
    # The fused graph's com.microsoft ops are untyped for ONNX shape inference: say their outputs are fp32.
    extra = {"DefaultTensorType": TensorProto.FLOAT}
    with tempfile.TemporaryDirectory(prefix="tritonize-int8-") as tmp:
        if options.method == "dynamic":
            quantize_dynamic(model, str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                             nodes_to_quantize=rewrites.quantizable + embed_ln, extra_options=extra)
        else:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            # Calibration records only tensors with a known type; ORT's symbolic inference knows the fused ops.
            typed = Path(tmp) / "typed.onnx"
            onnx.save(SymbolicShapeInference.infer_shapes(model, auto_merge=True), str(typed))
            quantize_static(str(typed), str(dst), data_reader(batches), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=rewrites.quantizable, calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
    return {"method": options.method, "matmuls_with_fp32_outliers": len(rewrites.decomposed), "smoothed_attention": len(rewrites.smoothed)}


def held_out_outputs(session, tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    feeds, mask = tokenized(tokenizer, texts, [i.name for i in session.get_inputs()], max_length)
    return session.run(None, feeds)[0], mask


def accuracy(fp32, int8, tokenizer, task: str, max_length: int, texts: TextSets, head=None, prompt: str = "") -> dict:
    """int8 against fp32 on the held-out texts: cosine of the served embeddings (the checkpoint's `head`,
    runtime.encoders.embedding_head, over texts with its default `prompt`; mean pooling without one), or
    label agreement and the largest probability difference for classification."""
    from tritonize.runtime.pooling import l2_normalize, mean_pool, softmax

    result = {"held_out_texts": len(texts.held_out), "calibration_texts": len(texts.calibration),
              "calibration_source": texts.calibration_source}
    held_out = [prompt + t for t in texts.held_out]
    a, mask = held_out_outputs(fp32, tokenizer, held_out, max_length)
    b, _ = held_out_outputs(int8, tokenizer, held_out, max_length)
    if task == "embedding":
        embed = (lambda x: head(x, mask, normalize=True)) if head is not None else (lambda x: l2_normalize(mean_pool(x, mask)))
        cos = (embed(a) * embed(b)).sum(-1)
        worst = int(cos.argmin())
        return result | {"min_cosine_vs_fp32": float(cos.min()), "mean_cosine_vs_fp32": float(cos.mean()),
                         "worst_text": texts.held_out[worst][:80]}
    pa, pb = softmax(a), softmax(b)
    return result | {"label_agreement": float((pa.argmax(-1) == pb.argmax(-1)).mean()), "max_probability_diff": float(np.abs(pa - pb).max())}


def check_floor(report: dict, task: str, name: str) -> None:
    """Raise Int8AccuracyError naming the measure and its floor when int8 is too far from fp32."""
    floor = EMBEDDING_FLOOR if task == "embedding" else CLASSIFICATION_FLOOR
    misses = []
    for measure, limit in floor.items():
        value = report[measure]
        ok = value <= limit if measure == "max_probability_diff" else value >= limit
        if not ok:
            misses.append(f"{measure} {value:.4f} (floor {'<=' if measure == 'max_probability_diff' else '>='} {limit})")
    if misses:
        raise Int8AccuracyError(
            f"{name}: int8 ({report['method']}) is too far from fp32 on {report['held_out_texts']} held-out texts: "
            f"{', '.join(misses)}. Try the other --quantization method, calibration texts like the served ones "
            f"(--calibration-texts), or serve fp32 (no --quantize).")
