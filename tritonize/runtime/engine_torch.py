"""What every family's PyTorch engine shares: the device a step instance runs on, the dtype, loading
stored weights without the hub, and what a GPU out-of-memory does to a batch.

Triton gives a KIND_GPU instance its GPU in `args["model_instance_device_id"]`; one instance per
visible GPU is the repository's default (instance_group count 1, kind GPU).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Before torch loads OpenMP: idle OpenMP threads spin by default, and in a server several steps (each
# its own process) share the cores; spinning stubs measured 75 ms p50 for a tiny encoder on 2 cores,
# 3.3 ms passive (the same reason the ONNX engines turn ORT's spinning off).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from tritonize.contract.engines import EngineSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DeviceUnavailable(RuntimeError):
    """The config asks for a device this process cannot see."""


class OutOfMemory(RuntimeError):
    """A batch did not fit in GPU memory; that batch fails, the model keeps serving."""


def resolve_device(spec: EngineSpec, args: dict | None = None) -> torch.device:
    if spec.device == "cpu":
        torch.set_num_threads(spec.threads or (os.cpu_count() or 1))
        return torch.device("cpu")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise DeviceUnavailable(
            f"device 'cuda' is configured (parameter device), but no CUDA device is visible to this process "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False, CUDA_VISIBLE_DEVICES={visible}); "
            f"convert with --device cpu, or serve on a machine with a GPU"
        )
    index = torch.cuda.current_device()
    if args and args.get("model_instance_kind") == "GPU":
        index = int(args.get("model_instance_device_id", index))
    if index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"device 'cuda:{index}' is not visible: this process sees {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def load_pretrained(cls, folder: Path, device: torch.device, dtype: str, sdpa: bool = True):
    """A transformers model from the stored weights (never the hub), on `device` in `dtype`, eval mode."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json: the repository was not written for the PyTorch engine")
    kwargs = {"attn_implementation": "sdpa"} if sdpa else {}
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (ValueError, ImportError):  # an architecture without SDPA support: its default attention
        model = cls.from_pretrained(str(folder), local_files_only=True)
    return model.to(device=device, dtype=DTYPES[dtype]).eval()


@contextlib.contextmanager
def guard_oom(what: str):
    """Turn a CUDA out-of-memory into `OutOfMemory` for this batch only, after freeing the cached blocks."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        first = str(e).splitlines()[0] if str(e) else "CUDA out of memory"
        raise OutOfMemory(f"GPU out of memory {what}; this batch failed and the model keeps serving ({first})") from None


def to_numpy(x: torch.Tensor):
    """float32 numpy on the host (sampling, pooling and the next step are numpy)."""
    return x.detach().to(dtype=torch.float32).cpu().numpy()
