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

from tritonize.contract.speech import MAX_AUDIO, Speech, SpeechLimits, Synthesis
from tritonize.converters.device import Placement
from tritonize.converters.repository import (
    Batching, mc, python_step, shim, tensor_in, tensor_out, with_parameters, write_model,
)
from tritonize.families import SPEECH

PARAMS = {"SPEAKING_RATE": "FP32", "NOISE_SCALE": "FP32", "NOISE_SCALE_DURATION": "FP32", "SEED": "INT64"}
_DTYPES = {"INT16": mc.TYPE_INT16, "INT32": mc.TYPE_INT32}


@dataclass
class SpeechPipeline:
    name: str
    sampling_rate: int
    batching: Batching = field(default_factory=lambda: Batching(max_batch_size=16))
    limits: SpeechLimits = field(default_factory=SpeechLimits)
    flavour: str = "python"
    min_tokens: int = Speech.min_tokens  # rows are padded at least to this (see converters/speech/vits.py)
    device: str | None = None  # None: ONNX Runtime; cpu | cuda: the PyTorch engine (model and stream steps)
    dtype: str = "float32"
    # Rows of a run may pad up to this x their real tokens (1.0 on CPU, see the contract); on a GPU batching pays.
    max_padding_ratio: float = Synthesis.max_padding_ratio

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
    return Speech(p.sampling_rate, p.limits, p.min_tokens).to_params()


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
    params = {**_params(p), **Synthesis(rows, p.max_padding_ratio, b.intra_op_threads).to_params()}
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
    config = with_parameters(config, {**_params(p), "intra_op_threads": str(p.batching.intra_op_threads)})
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


SHIMS = SPEECH.runtime.served  # step role -> the served class its one-line model.py imports


def write_speech_pipeline(repo: Path, p: SpeechPipeline, onnx_model: Path | None, frontend: dict,
                          weights: dict[str, Path] | None = None) -> dict:
    """The model and stream steps get `model.onnx`, or for the PyTorch engine the stored `weights`;
    returns the manifest's `pipeline`."""
    if p.flavour != "python":
        raise ValueError("speech pipelines are written for the Python backend only so far (flavour 'python')")
    repo.mkdir(parents=True, exist_ok=True)
    spec = json.dumps(frontend)
    engine = dict(weights) if p.placement.torch else {"model.onnx": onnx_model}
    write_model(repo, frontend_config(p), {"model.py": shim(SHIMS["frontend"]), "frontend.json": spec})
    write_model(repo, model_config(p), {"model.py": shim(SHIMS["model"]), **engine})
    write_model(repo, audio_config(p), {"model.py": shim(SHIMS["audio"])})
    write_model(repo, stream_config(p), {"model.py": shim(SHIMS["stream"]), "frontend.json": spec, **engine})
    write_model(repo, ensemble_config(p, frontend["defaults"]))
    return {"pipeline": asdict(p)}
