"""An encoder pipeline's Triton configs: TEXT -> NAME_tokenizer -> NAME_model -> NAME_postprocess.

One description of a pipeline (`EncoderPipeline`) becomes one of three flavours, all with the same
request/response contract (TEXT in; EMBEDDING, TOKEN_COUNT or LOGITS, PROBABILITIES, LABEL out):
- `fused` (embedded default, CPU): one Python-backend model NAME does all three steps (see
  `tritonize.runtime.encoders.fused`), so a request crosses one IPC boundary instead of three;
- `python` (CPU, or a GPU with the PyTorch engine): every step a Python-backend model; the model step
  runs ONNX Runtime itself and merges ragged requests into length buckets;
- `native` (NGC container, GPU): the model step is Triton's own `onnxruntime` backend with the
  TensorRT execution provider (engine `onnxruntime`, nothing to build), or a `tensorrt_plan` engine with
  one optimisation profile per length bucket (engine `tensorrt`, built on the serving GPU, see
  `tensorrt.py`); the tokenizer pads to multiples of 16 so the dynamic batcher, which only groups equal
  shapes there, finds requests to batch.
The `python` flavour's model step runs ONNX Runtime (default) or, with a device, the PyTorch engine
on the stored weights (`tritonize.converters.device`).
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tritonize.contract.encoders import (
    DENSE_FILE, GRAPH_OUTPUT, STEP_OUTPUT, Buckets, EngineStep, Labels, Pooling, Prompts, Served, Tokenizing,
)
from tritonize.contract.files import MANIFEST
from tritonize.converters.encoders.tensorrt import PLAN_FILE, SPEC_FILE, BuildSpec, derive_profiles, length_buckets
from tritonize.converters.device import Placement
from tritonize.converters.repository import (
    WARMUP_TOKENS, Batching, dynamic_batching, mc, python_step, shim, tensor_in, tensor_out, warmup, with_parameters, write_model,
)
from tritonize.families import ENCODERS

FLAVOURS = ("fused", "python", "native")
ENGINES = ("onnxruntime", "tensorrt")  # the native flavour's model step
NATIVE_PAD_MULTIPLE = 16


@dataclass
class EncoderPipeline:
    """Everything the writer needs to know about a converted encoder."""

    name: str
    task: str  # embedding | classification
    hidden_size: int
    max_length: int
    pad_token_id: int
    labels: list[str] = field(default_factory=list)  # classification only
    graph_inputs: list[str] = field(default_factory=lambda: ["input_ids", "attention_mask"])
    batching: Batching = field(default_factory=Batching)
    flavour: str = "fused"
    engine: str = "onnxruntime"  # native flavour only: onnxruntime (TensorRT EP) or tensorrt (a plan)
    precision: str = "fp16"  # tensorrt engine only
    max_text_bytes: int = Tokenizing.max_text_bytes
    max_padding_ratio: float = Buckets.max_padding_ratio
    min_padding_tokens: int = Buckets.min_padding_tokens  # per row; see tritonize.runtime.buckets.plan_buckets
    device: str | None = None  # None: ONNX Runtime; cpu | cuda: the PyTorch engine (python flavour)
    dtype: str = "float32"
    pooling: Pooling = field(default_factory=Pooling)  # embedding: the checkpoint's head (st_modules.py)
    prompts: Prompts = field(default_factory=Prompts)
    embedding_size: int = 0  # EMBEDDING's width (Dense out, or hidden x pooling modes); 0: hidden_size

    @property
    def dims(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def placement(self) -> Placement:
        return Placement(self.device, self.dtype)

    @property
    def graph_output(self) -> str:
        return GRAPH_OUTPUT[self.task]

    def served(self) -> dict[str, str]:
        """What the client reads (on the ensemble and the fused step): the task, the limit, the labels, the prompts."""
        return {**Served(self.task, self.max_length).to_params(), **Labels(tuple(self.labels)).to_params(), **self.prompts.to_params()}

    def tokenizing(self, native: bool = False) -> Tokenizing:
        return Tokenizing(self.max_length, self.max_text_bytes, self.pad_token_id, NATIVE_PAD_MULTIPLE if native else 1,
                          emit_token_type_ids=native and "token_type_ids" in self.graph_inputs)

    def buckets(self) -> Buckets:
        return Buckets(self.pad_token_id, self.max_padding_ratio, self.min_padding_tokens, self.batching.max_batch_size,
                       self.batching.intra_op_threads)

    @property
    def step_names(self) -> dict[str, str]:
        return {s: f"{self.name}_{s}" for s in ("tokenizer", "model", "postprocess")}


# -- the pipeline ----------------------------------------------------------------------------------
def tokenizer_config(p: EncoderPipeline) -> mc.ModelConfig:
    native = p.flavour == "native"
    outputs = [tensor_out("INPUT_IDS", "INT64", [-1]), tensor_out("ATTENTION_MASK", "INT64", [-1])]
    if native and "token_type_ids" in p.graph_inputs:
        outputs.append(tensor_out("TOKEN_TYPE_IDS", "INT64", [-1]))
    params = {**p.tokenizing(native).to_params(), **p.prompts.to_params()}  # the default prompt is prepended here
    return python_step(p.step_names["tokenizer"], [tensor_in("TEXT", "BYTES", [1])], outputs, params, p.batching, entry=True)


def tensorrt_build_spec(p: EncoderPipeline) -> BuildSpec:
    buckets = length_buckets(p.max_length, NATIVE_PAD_MULTIPLE)
    return BuildSpec(inputs=list(p.graph_inputs), profiles=derive_profiles(p.max_length, p.batching.max_batch_size, NATIVE_PAD_MULTIPLE),
                     precision=p.precision, extra={"max_length": p.max_length, "bucket_edges": buckets})


def bucket_warmups(p: EncoderPipeline) -> list[mc.ModelWarmup]:
    """One single-row request at each bucket's longest length: every profile is initialised before serving."""
    inputs = lambda n: {k: mc.ModelWarmup.Input(data_type=mc.TYPE_INT64, dims=[n], input_data_file=f"ones_{n}") for k in p.graph_inputs}
    return [mc.ModelWarmup(name=f"{n}_tokens", batch_size=1, inputs=inputs(n)) for n in length_buckets(p.max_length, NATIVE_PAD_MULTIPLE)]


def tensorrt_model_config(p: EncoderPipeline, out_dims: list[int]) -> mc.ModelConfig:
    b = p.batching
    n_profiles = len(tensorrt_build_spec(p).profiles)
    return mc.ModelConfig(
        name=p.step_names["model"],
        platform="tensorrt_plan",
        default_model_filename=PLAN_FILE,
        max_batch_size=b.max_batch_size,
        input=[tensor_in(n, "INT64", [-1]) for n in p.graph_inputs],
        output=[tensor_out(p.graph_output, "FP32", out_dims)],
        dynamic_batching=dynamic_batching(b),
        # Without a profile list Triton gives every instance profile 0 only: list every bucket's.
        instance_group=[mc.ModelInstanceGroup(count=b.instance_count, kind=mc.ModelInstanceGroup.KIND_GPU,
                                              profile=[str(i) for i in range(n_profiles)])],
        model_warmup=bucket_warmups(p),
    )


def model_config(p: EncoderPipeline) -> mc.ModelConfig:
    b = p.batching
    out_dims = [-1, p.hidden_size] if p.task == "embedding" else [len(p.labels)]
    if p.flavour == "native" and p.engine == "tensorrt":
        return tensorrt_model_config(p, out_dims)
    if p.flavour == "native":
        config = mc.ModelConfig(
            name=p.step_names["model"],
            platform="onnxruntime_onnx",
            max_batch_size=b.max_batch_size,
            input=[tensor_in(n, "INT64", [-1]) for n in p.graph_inputs],
            output=[tensor_out(p.graph_output, "FP32", out_dims)],
            dynamic_batching=dynamic_batching(b),
            instance_group=[mc.ModelInstanceGroup(count=b.instance_count, kind=mc.ModelInstanceGroup.KIND_GPU)],
        )
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP16"
        trt.parameters["max_workspace_size_bytes"] = str(1 << 30)
        config.model_warmup.append(warmup({n: f"ones_{WARMUP_TOKENS}" for n in p.graph_inputs}))
        return config
    config = python_step(
        p.step_names["model"],
        [tensor_in("INPUT_IDS", "INT64", [-1], ragged=True), tensor_in("ATTENTION_MASK", "INT64", [-1], ragged=True)],
        [tensor_out(STEP_OUTPUT[p.task], "FP32", out_dims)],
        {**EngineStep.of(p.task).to_params(), **p.buckets().to_params()},
        b,
        instances=b.instance_count,
    )
    if p.placement.torch:
        p.placement.place(config, b.instance_count)
    config.model_warmup.append(warmup({"INPUT_IDS": f"ones_{WARMUP_TOKENS}", "ATTENTION_MASK": f"ones_{WARMUP_TOKENS}"}))
    return config


def postprocess_config(p: EncoderPipeline) -> mc.ModelConfig:
    if p.task == "embedding":
        inputs = [
            tensor_in("TOKEN_EMBEDDINGS", "FP32", [-1, p.hidden_size], ragged=True),
            tensor_in("ATTENTION_MASK", "INT64", [-1], ragged=True),
        ]
        outputs = [tensor_out("EMBEDDING", "FP32", [p.dims]), tensor_out("TOKEN_COUNT", "INT64", [1])]
        return python_step(p.step_names["postprocess"], inputs, outputs, p.pooling.to_params(), p.batching)
    n = len(p.labels)
    outputs = [tensor_out("LOGITS", "FP32", [n]), tensor_out("PROBABILITIES", "FP32", [n]), tensor_out("LABEL", "BYTES", [1])]
    return python_step(p.step_names["postprocess"], [tensor_in("LOGITS", "FP32", [n])], outputs, Labels(tuple(p.labels)).to_params(), p.batching)


def ensemble_config(p: EncoderPipeline) -> mc.ModelConfig:
    s = p.step_names
    native = p.flavour == "native"
    tok_out = {"INPUT_IDS": "input_ids", "ATTENTION_MASK": "attention_mask"}
    if native and "token_type_ids" in p.graph_inputs:
        tok_out["TOKEN_TYPE_IDS"] = "token_type_ids"
    model_in = {n: n for n in p.graph_inputs} if native else {"INPUT_IDS": "input_ids", "ATTENTION_MASK": "attention_mask"}
    model_out_name = p.graph_output if native else STEP_OUTPUT[p.task]
    if p.task == "embedding":
        post_in = {"TOKEN_EMBEDDINGS": "model_output", "ATTENTION_MASK": "attention_mask"}
        outputs = {"EMBEDDING": [p.dims], "TOKEN_COUNT": [1]}
    else:
        post_in = {"LOGITS": "model_output"}
        outputs = {"LOGITS": [len(p.labels)], "PROBABILITIES": [len(p.labels)], "LABEL": [1]}
    steps = [
        mc.ModelEnsembling.Step(model_name=s["tokenizer"], model_version=-1, input_map={"TEXT": "TEXT"}, output_map=tok_out),
        mc.ModelEnsembling.Step(model_name=s["model"], model_version=-1, input_map=model_in, output_map={model_out_name: "model_output"}),
        mc.ModelEnsembling.Step(model_name=s["postprocess"], model_version=-1, input_map=post_in, output_map={k: k for k in outputs}),
    ]
    config = mc.ModelConfig(
        name=p.name,
        platform="ensemble",
        max_batch_size=p.batching.max_batch_size,
        input=[tensor_in("TEXT", "BYTES", [1])],
        output=[tensor_out(k, {"LABEL": "BYTES", "TOKEN_COUNT": "INT64"}.get(k, "FP32"), d) for k, d in outputs.items()],
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )
    # Read by the client: what this pipeline does and, for classification, its label names.
    return with_parameters(config, p.served())


# Warm-up text for the fused step: a BYTES input file holds each string as a 4-byte little-endian
# length and its bytes (Triton's serialised string tensor).
_WARMUP_STRING = b"A short sentence that warms up the tokenizer and the engine."
WARMUP_TEXT = struct.pack("<I", len(_WARMUP_STRING)) + _WARMUP_STRING
WARMUP_TEXT_FILE = "text"


def fused_config(p: EncoderPipeline) -> mc.ModelConfig:
    """The whole pipeline as one Python-backend model under the pipeline's own name, with the
    ensemble's inputs, outputs and client-facing parameters."""
    b = p.batching
    ensemble = ensemble_config(p)
    # Read by the client, as from the ensemble; then the tokenizer's, the buckets' and the pooling's.
    params = {**p.served(), **p.tokenizing().to_params(), **p.buckets().to_params(), **p.pooling.to_params()}
    config = python_step(p.name, list(ensemble.input), list(ensemble.output), params, b, instances=b.instance_count, entry=True)
    if p.placement.torch:
        p.placement.place(config, b.instance_count)
    config.model_warmup.append(mc.ModelWarmup(
        name="one_text", batch_size=1,
        inputs={"TEXT": mc.ModelWarmup.Input(data_type=mc.TYPE_STRING, dims=[1], input_data_file=WARMUP_TEXT_FILE)}))
    return config


def check_engine(flavour: str, engine: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if engine == "tensorrt" and flavour != "native":
        raise ValueError("engine 'tensorrt' needs flavour 'native': the embedded server has no TensorRT backend")


SHIMS = ENCODERS.runtime.served  # step role -> the served class its one-line model.py imports



def remove_previous(repo: Path, name: str) -> None:
    """A conversion replaces the pipeline it converted before, whichever flavour that was: no step of
    the old one stays behind to be loaded. Only folders of a pipeline we wrote (it has a manifest)."""
    if not (repo / name / MANIFEST).exists():
        return
    for folder in [repo / name, *(repo / f"{name}_{s}" for s in ("tokenizer", "model", "postprocess"))]:
        shutil.rmtree(folder, ignore_errors=True)


def encoder_pipeline(name: str, task: str, config, tokenizer, max_length: int, batching: Batching, modules=None, **options) -> EncoderPipeline:
    """The pipeline of a checkpoint (its transformers config and tokenizer, and for an embedder its
    `st_modules.SentenceModules`); `options`: flavour, engine, device..."""
    labels = [config.id2label[i] for i in range(config.num_labels)] if task == "classification" else []
    hidden = getattr(config, "hidden_size", getattr(config, "dim", 0))
    if modules is not None and task == "embedding":
        options |= {"pooling": modules.pooling, "prompts": modules.prompts, "embedding_size": modules.embedding_size(hidden)}
    return EncoderPipeline(name=name, task=task, hidden_size=hidden, max_length=max_length,
                           pad_token_id=tokenizer.pad_token_id or 0, labels=labels, batching=batching, **options)


def write_encoder_pipeline(repo: Path, p: EncoderPipeline, onnx_model: Path | None, tokenizer_json: Path,
                           weights: dict[str, Path] | None = None, dense: list | None = None) -> dict:
    """Write the models of an encoder pipeline (four, or one when fused); returns the manifest's `pipeline`.
    The engine gets `model.onnx`, or for the PyTorch engine the stored `weights`; the step that pools
    gets the checkpoint's `dense` layers (embedding_head.DenseLayer)."""
    check_engine(p.flavour, p.engine)
    if p.placement.torch and p.flavour != "python":
        raise ValueError("the PyTorch engine (--device) runs in the python flavour; native is ONNX Runtime/TensorRT")
    repo.mkdir(parents=True, exist_ok=True)
    remove_previous(repo, p.name)
    ones = np.ones(WARMUP_TOKENS, dtype=np.int64).tobytes()
    engine_files = dict(weights) if p.placement.torch else {"model.onnx": onnx_model}
    if len(dense or []) != len(p.pooling.dense):
        raise ValueError(f"the pipeline pools with {len(p.pooling.dense)} Dense layers, {len(dense or [])} given")
    head_files: dict[str, Path | str | bytes] = {DENSE_FILE.format(i): d.to_bytes() for i, d in enumerate(dense or [])}
    if p.flavour == "fused":
        files = {**engine_files, **head_files, "model.py": shim(SHIMS["fused"]), "tokenizer.json": tokenizer_json,
                 f"warmup/{WARMUP_TEXT_FILE}": WARMUP_TEXT}
        write_model(repo, fused_config(p), files)
        return {"pipeline": asdict(p)}
    model_files: dict[str, Path | str | bytes] = {**engine_files, f"warmup/ones_{WARMUP_TOKENS}": ones}
    if p.flavour == "python":
        model_files["model.py"] = shim(SHIMS["model"])
    if p.engine == "tensorrt":  # the graph and the build spec; the plan is built on the serving GPU
        model_files = {"model.onnx": onnx_model, SPEC_FILE: tensorrt_build_spec(p).to_json()}
        model_files |= {f"warmup/ones_{n}": np.ones(n, dtype=np.int64).tobytes() for n in length_buckets(p.max_length, NATIVE_PAD_MULTIPLE)}
    write_model(repo, tokenizer_config(p), {"model.py": shim(SHIMS["tokenizer"]), "tokenizer.json": tokenizer_json})
    write_model(repo, model_config(p), model_files)
    write_model(repo, postprocess_config(p), {"model.py": shim(SHIMS[p.task]), **(head_files if p.task == "embedding" else {})})
    write_model(repo, ensemble_config(p))
    return {"pipeline": asdict(p)}
