"""The encoder engine on PyTorch (CUDA, or CPU for CI): the checkpoint's own transformers model with
SDPA attention, in float32, float16 or bfloat16, fed the same length buckets as the ONNX engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The shared module first: it sets the OpenMP wait policy before torch loads.
from tritonize.contract.engines import EngineSpec
from tritonize.contract.files import WEIGHTS
from tritonize.runtime.engine_torch import guard_oom, load_pretrained, resolve_device, to_numpy
import torch  # noqa: E402  (after the shared module, on purpose)



class TorchEncoder:
    def __init__(self, folder: Path, output_name: str, spec: EngineSpec, args: dict | None = None):
        from transformers import AutoModel, AutoModelForSequenceClassification

        self.output_name = output_name
        self.device = resolve_device(spec, args)
        cls = AutoModel if output_name == "last_hidden_state" else AutoModelForSequenceClassification
        self.model = load_pretrained(cls, Path(folder) / WEIGHTS, self.device, spec.dtype)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), guard_oom(f"on {self.device} for {ids.shape[0]} rows x {ids.shape[1]} tokens"):
            out = self.model(input_ids=torch.from_numpy(ids).to(self.device), attention_mask=torch.from_numpy(mask).to(self.device))
            return to_numpy(out.last_hidden_state if self.output_name == "last_hidden_state" else out.logits)
