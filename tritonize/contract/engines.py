"""Which engine a served step runs (torch-free): every family has two implementations of one engine
contract, ONNX Runtime on CPU (the default) and PyTorch on CPU or CUDA. The converter writes `engine`,
`device` and `dtype` (and `intra_op_threads` with its family's parameters); the step reads them here and
loads the matching module lazily, so an ONNX-flavoured repository never imports torch."""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("onnx", "torch")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class EngineSpec:
    engine: str = "onnx"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0  # CPU threads (parameter intra_op_threads: ONNX Runtime intra-op, torch.set_num_threads); 0: one per core

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"parameter engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.device not in DEVICES:
            raise ValueError(f"parameter device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"parameter dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.engine == "onnx" and (self.device, self.dtype) != ("cpu", "float32"):
            raise ValueError(f"the ONNX Runtime engine runs float32 on cpu, not {self.dtype} on {self.device}")
        if self.threads < 0:
            raise ValueError(f"parameter intra_op_threads must be >= 0, got {self.threads}")

    def placement_parameters(self) -> dict[str, str]:
        """The writer of the engine's placement (the threads go with each family's parameters)."""
        return {"engine": self.engine, "device": self.device, "dtype": self.dtype}

    @classmethod
    def from_params(cls, p: dict[str, str]) -> "EngineSpec":
        return cls(p.get("engine", "onnx"), p.get("device", "cpu"), p.get("dtype", "float32"), int(p.get("intra_op_threads", 0) or 0))

    @property
    def torch(self) -> bool:
        return self.engine == "torch"
