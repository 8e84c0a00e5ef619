"""The encoder engine on ONNX Runtime (CPU): the default flavour."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tritonize.contract.encoders import UNFUSED_AT_LOAD
from tritonize.contract.engines import EngineSpec


def encoder_session(path: Path, threads: int = 0, allow_spinning: str = "0"):
    """The served encoder's ONNX Runtime session on the graph at `path` (benchmarks use it in process,
    so they measure the same session options)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads spin by default; in a server they would steal the cores that the
    # tokenizer, the other steps and Triton's own threads need between engine calls.
    opts.add_session_config_entry("session.intra_op.allow_spinning", allow_spinning)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED_AT_LOAD)


class OnnxEncoder:
    def __init__(self, folder: Path, output_name: str, spec: EngineSpec, allow_spinning: str = "0"):
        self.output_name = output_name  # last_hidden_state (embedding) or logits (classification)
        self.session = encoder_session(Path(folder) / "model.onnx", spec.threads, allow_spinning)
        self.graph_inputs = {i.name for i in self.session.get_inputs()}

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.graph_inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return self.session.run([self.output_name], feeds)[0]
