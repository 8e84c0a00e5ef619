"""Where a converted model runs: ONNX Runtime on CPU (the default), or the PyTorch engine on `cpu` or
`cuda` in float32, float16 or bfloat16 (`--device`, `--dtype`). The PyTorch flavour stores the
checkpoint's weights (safetensors), config and tokenizer files in the model's version folder, under
`torch/`, so the served step builds the model with transformers and never reaches for the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from tritonize.contract.engines import DEVICES, DTYPES, EngineSpec
from tritonize.contract.files import WEIGHTS


class DeviceError(ValueError):
    """The requested device cannot be used here; the message names it."""


@dataclass(frozen=True)
class Placement:
    device: str | None = None  # None: ONNX Runtime on CPU; cpu | cuda: the PyTorch engine there
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.device is not None and self.device not in DEVICES:
            raise DeviceError(f"--device must be one of {', '.join(DEVICES)} (or left out for ONNX Runtime on CPU), got {self.device!r}")
        if self.dtype not in DTYPES:
            raise DeviceError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device is None and self.dtype != "float32":
            raise DeviceError(f"--dtype {self.dtype} needs the PyTorch engine (--device cpu or cuda): the ONNX Runtime engine is float32")

    @property
    def engine(self) -> str:
        return "onnx" if self.device is None else "torch"

    @property
    def torch(self) -> bool:
        return self.device is not None

    def check_torch(self, entry: str, onnx_entry: str) -> None:
        """For the PyTorch flavour's entry points, before any work: a device is given and visible."""
        if not self.torch:
            raise ValueError(f"{entry} needs a device (cpu or cuda); {onnx_entry} writes the ONNX flavour")
        self.check_available()

    def check_available(self) -> None:
        """Fail before any work when `cuda` is asked for and no CUDA device is visible."""
        if self.device != "cuda":
            return
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device cuda: no CUDA device is visible here (torch {torch.__version__}, torch.cuda.is_available() is False); "
                "convert with --device cpu, or on the machine with the GPU"
            )

    def options(self) -> dict:
        """What enters the conversion's reuse fingerprint: nothing for the default, so old keys stay valid."""
        return {"device": self.device, "dtype": self.dtype} if self.torch else {}

    def parameters(self) -> dict[str, str]:
        """The step's config parameters that select its engine (tritonize.contract.engines.EngineSpec)."""
        return EngineSpec(self.engine, self.device or "cpu", self.dtype).placement_parameters()

    def place(self, config: mc.ModelConfig, count: int = 1) -> mc.ModelConfig:
        """A step that runs the engine: KIND_GPU without a GPU list, which Triton reads as `count` instances
        on each visible GPU (default 1: one per GPU), or KIND_CPU."""
        kind = mc.ModelInstanceGroup.KIND_GPU if self.device == "cuda" else mc.ModelInstanceGroup.KIND_CPU
        del config.instance_group[:]
        config.instance_group.append(mc.ModelInstanceGroup(count=count, kind=kind))
        for k, v in self.parameters().items():
            config.parameters[k].string_value = v
        return config


def save_weights(model, tokenizer, folder: Path) -> dict[str, Path]:
    """The checkpoint as the PyTorch step loads it: {path in the version folder: file}."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return {f"{WEIGHTS}/{f.relative_to(folder)}": f for f in sorted(folder.rglob("*")) if f.is_file()}


def reload_error(reference, reloaded, compare) -> float:
    """`compare(model) -> array` on the original and on the stored copy: the largest difference."""
    import numpy as np

    return float(np.abs(np.asarray(compare(reference)) - np.asarray(compare(reloaded))).max())
