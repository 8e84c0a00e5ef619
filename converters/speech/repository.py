"""Triton configs of a speech pipeline, built with the writer's helpers (protobuf ModelConfig).

    NAME (ensemble): TEXT, SPEAKING_RATE, NOISE_SCALE, NOISE_SCALE_DURATION, SEED [, MAX_AUDIO_SECONDS]
      -> NAME_frontend (normalise, split sentences, character ids: [1, sentences, tokens])
      -> NAME_model (VITS in ONNX Runtime; sentences of all queued requests batched by length)
      -> NAME_audio (trim each sentence to its true length, join, 16-bit PCM, WAV)
      => AUDIO (int16), SAMPLE_RATE, WAV
    NAME_stream (decoupled): the same steps in one model, one response per sentence.

One request carries one text (the ensemble's max_batch_size is 1); the dynamic batcher merges
requests, and the model step merges their sentences.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonize.converters.device import Placement
from tritonize.converters.repository import (
    Batching, mc, python_step, shim, tensor_in, tensor_out, with_parameters, write_model,
)

PARAMS = {"SPEAKING_RATE": "FP32", "NOISE_SCALE": "FP32", "NOISE_SCALE_DURATION": "FP32", "SEED": "INT64"}
# Optional per request: a tighter limit on the audio's duration than the voice's max_audio_seconds.
MAX_AUDIO = "MAX_AUDIO_SECONDS"
_DTYPES = {"INT16": mc.TYPE_INT16, "INT32": mc.TYPE_INT32}


@dataclass
class SpeechLimits:
    max_text_bytes: int = 200_000
    max_sentence_chars: int = 300  # longer sentences are cut at commas, then spaces
    max_sentences: int = 2_000
    pause_ms: int = 120  # silence between sentences
    # The longest audio one request may produce (one-shot or streamed); a request may ask for less
    # (MAX_AUDIO_SECONDS). Without it, 100,000 characters made ~50 minutes (~260 MB) in one response.
    max_audio_seconds: float = 600.0


@dataclass
class SpeechPipeline:
    name: str
    sampling_rate: int
    batching: Batching = field(default_factory=lambda: Batching(max_batch_size=16))
    limits: SpeechLimits = field(default_factory=SpeechLimits)
    flavour: str = "python"
    min_tokens: int = 1  # rows are padded at least to this (see converters/speech/vits.py)
    device: str | None = None  # None: ONNX Runtime; cpu | cuda: the PyTorch engine (model and stream steps)
    dtype: str = "float32"
    # Rows of a run may pad up to this x their real tokens. On CPU a padded VITS batch costs more than its
    # rows one by one (runtime/speech/synthesis.py), so 1.0; on a GPU batching pays (not yet measured).
    max_padding_ratio: float = 1.0

    @property
    def placement(self) -> Placement:
        return Placement(self.device, self.dtype)

    @property
    def steps(self) -> dict[str, str]:
        return {s: f"{self.name}_{s}" for s in ("frontend", "model", "audio", "stream")}


def _out(name: str, dtype: str, dims: list[int]) -> mc.ModelOutput:
    if dtype in _DTYPES:
        return mc.ModelOutput(name=name, data_type=_DTYPES[dtype], dims=dims)
    return tensor_out(name, dtype, dims)


def _max_audio_input() -> mc.ModelInput:
    return tensor_in(MAX_AUDIO, "FP32", [1], optional=True)


def _params(p: SpeechPipeline) -> dict:
    return {"limits": asdict(p.limits), "sampling_rate": str(p.sampling_rate), "min_tokens": str(p.min_tokens)}


def frontend_config(p: SpeechPipeline) -> mc.ModelConfig:
    outputs = [tensor_out("INPUT_IDS", "INT64", [-1, -1]), tensor_out("ATTENTION_MASK", "INT64", [-1, -1])]
    return python_step(p.steps["frontend"], [tensor_in("TEXT", "BYTES", [1])], outputs, _params(p), p.batching, entry=True)


def model_config(p: SpeechPipeline) -> mc.ModelConfig:
    inputs = [tensor_in("INPUT_IDS", "INT64", [-1, -1], ragged=True), tensor_in("ATTENTION_MASK", "INT64", [-1, -1], ragged=True)]
    inputs += [tensor_in(k, t, [1]) for k, t in PARAMS.items()] + [_max_audio_input()]
    outputs = [tensor_out("WAVEFORM", "FP32", [-1, -1]), tensor_out("AUDIO_LENGTHS", "INT64", [-1])]
    b = p.batching
    # ONNX Runtime on CPU: rows run one by one. Five sentences in one call measured 1.06-1.5x the time of
    # the same five one at a time (tts_bench, quiet 2-core machine, three runs): the convolutions
    # already use every thread for one row, and a batch adds padding. The dynamic batcher still
    # gathers requests into one execution. The PyTorch engine (a GPU) runs up to max_batch_size rows.
    rows = b.max_batch_size if p.placement.torch else 1
    params = {**_params(p), "intra_op_threads": str(b.intra_op_threads), "max_rows_per_run": str(rows),
              "max_padding_ratio": str(p.max_padding_ratio)}
    config = python_step(p.steps["model"], inputs, outputs, params, b, instances=b.instance_count)
    return p.placement.place(config, b.instance_count) if p.placement.torch else config


def audio_config(p: SpeechPipeline) -> mc.ModelConfig:
    inputs = [tensor_in("WAVEFORM", "FP32", [-1, -1], ragged=True), tensor_in("AUDIO_LENGTHS", "INT64", [-1], ragged=True)]
    outputs = [_out("AUDIO", "INT16", [-1]), _out("SAMPLE_RATE", "INT32", [1]), tensor_out("WAV", "BYTES", [1])]
    return python_step(p.steps["audio"], inputs, outputs, _params(p), p.batching)


def stream_config(p: SpeechPipeline) -> mc.ModelConfig:
    inputs = [tensor_in("TEXT", "BYTES", [1])] + [tensor_in(k, t, [1]) for k, t in PARAMS.items()] + [_max_audio_input()]
    outputs = [_out("AUDIO", "INT16", [-1]), _out("SAMPLE_RATE", "INT32", [1]), _out("SENTENCE", "INT32", [1])]
    config = mc.ModelConfig(
        name=p.steps["stream"], backend="python", max_batch_size=1, input=inputs, output=outputs,
        instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True),
    )
    b = p.batching
    config = with_parameters(config, {**_params(p), "intra_op_threads": str(b.intra_op_threads)})
    return p.placement.place(config) if p.placement.torch else config


def ensemble_config(p: SpeechPipeline, defaults: dict) -> mc.ModelConfig:
    s = p.steps
    steps = [
        mc.ModelEnsembling.Step(model_name=s["frontend"], model_version=-1, input_map={"TEXT": "TEXT"},
                                output_map={"INPUT_IDS": "input_ids", "ATTENTION_MASK": "attention_mask"}),
        mc.ModelEnsembling.Step(model_name=s["model"], model_version=-1,
                                input_map={"INPUT_IDS": "input_ids", "ATTENTION_MASK": "attention_mask",
                                           **{k: k for k in [*PARAMS, MAX_AUDIO]}},
                                output_map={"WAVEFORM": "waveform", "AUDIO_LENGTHS": "audio_lengths"}),
        mc.ModelEnsembling.Step(model_name=s["audio"], model_version=-1,
                                input_map={"WAVEFORM": "waveform", "AUDIO_LENGTHS": "audio_lengths"},
                                output_map={"AUDIO": "AUDIO", "SAMPLE_RATE": "SAMPLE_RATE", "WAV": "WAV"}),
    ]
    config = mc.ModelConfig(
        name=p.name, platform="ensemble", max_batch_size=1,
        input=[tensor_in("TEXT", "BYTES", [1])] + [tensor_in(k, t, [1]) for k, t in PARAMS.items()] + [_max_audio_input()],
        output=[_out("AUDIO", "INT16", [-1]), _out("SAMPLE_RATE", "INT32", [1]), tensor_out("WAV", "BYTES", [1])],
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )
    # Read by the client: the task, the rate and the voice's own defaults for the parameters.
    return with_parameters(config, {"task": "speech", "sampling_rate": str(p.sampling_rate), "defaults": defaults,
                                    "stream_model": s["stream"], "max_audio_seconds": str(p.limits.max_audio_seconds)})


SHIMS = {
    "frontend": "tritonize.runtime.speech.frontend:FrontendStep",
    "model": "tritonize.runtime.speech.synthesis:SynthesisStep",
    "audio": "tritonize.runtime.speech.audio:AudioStep",
    "stream": "tritonize.runtime.speech.stream:StreamingSpeechStep",
}


def write_speech_pipeline(repo: Path, p: SpeechPipeline, onnx_model: Path | None, frontend: dict, manifest: dict,
                          weights: dict[str, Path] | None = None) -> list[Path]:
    """The model and stream steps get `model.onnx`, or for the PyTorch engine the stored `weights`."""
    if p.flavour != "python":
        raise ValueError("speech pipelines are written for the Python backend only so far (flavour 'python')")
    repo.mkdir(parents=True, exist_ok=True)
    spec = json.dumps(frontend)
    engine = dict(weights) if p.placement.torch else {"model.onnx": onnx_model}
    folders = [
        write_model(repo, frontend_config(p), {"model.py": shim(SHIMS["frontend"]), "frontend.json": spec}),
        write_model(repo, model_config(p), {"model.py": shim(SHIMS["model"]), **engine}),
        write_model(repo, audio_config(p), {"model.py": shim(SHIMS["audio"])}),
        write_model(repo, stream_config(p), {"model.py": shim(SHIMS["stream"]), "frontend.json": spec, **engine}),
        write_model(repo, ensemble_config(p, frontend["defaults"])),
    ]
    (repo / p.name / "tritonize.json").write_text(json.dumps({**manifest, "pipeline": asdict(p)}, indent=2))
    return folders
