"""Triton model configs as text: config.pbtxt is a `ModelConfig` protobuf in text format, written by the
converters and read by the planner, deploy and the chatbot's converter; which model of a pipeline runs
its engine."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def config_parameters(config: mc.ModelConfig) -> dict[str, str]:
    """The string parameters of a config (as the runtime gets them in `args`)."""
    return {k: v.string_value for k, v in config.parameters.items()}


def set_parameters(config: mc.ModelConfig, params: dict[str, str]) -> mc.ModelConfig:
    for k, v in params.items():
        config.parameters[k].string_value = v
    return config

def engine_model(repo: Path, pipeline: str) -> str | None:
    """The model of a pipeline that runs its engine (the one batching settings and the planner's
    variants apply to): an ensemble's `NAME_model` step, or the pipeline itself when it is one fused
    Python-backend model (it has the engine's `max_rows_per_run`); None for pipelines without one."""
    config = read_config(Path(repo) / pipeline / "config.pbtxt")
    steps = [s.model_name for s in config.ensemble_scheduling.step]
    if f"{pipeline}_model" in steps:
        return f"{pipeline}_model"
    return pipeline if "max_rows_per_run" in config.parameters else None
