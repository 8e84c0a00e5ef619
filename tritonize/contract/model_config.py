"""Triton model configs as text: config.pbtxt is a `ModelConfig` protobuf in text format, written by the
converters and read by the planner, deploy and the chatbot's converter."""

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
