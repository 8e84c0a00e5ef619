"""The VITS engine on ONNX Runtime (CPU): the graph the converter exported with seeded noise and rates as inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tritonize.runtime.pooling import pad_vits_batch
from tritonize.runtime.speech.voice import Voice


class VitsEngine:
    def __init__(self, onnx_path: str | Path, threads: int = 0, min_tokens: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see runtime/encoders/engine_onnx.py
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.min_tokens = min_tokens  # padding is masked, so extra width never changes the audio

    def run(self, rows: list[np.ndarray], voices: list[Voice], seeds: list[int]) -> list[np.ndarray]:
        """Waveforms (float32, true length) of token-id rows, one engine call."""
        ids, mask = pad_vits_batch(rows, self.min_tokens)
        feeds = {
            "input_ids": ids, "attention_mask": mask, "seed": np.array(seeds, np.int64),
            "noise_scale": np.array([v.noise_scale for v in voices], np.float32),
            "noise_scale_duration": np.array([v.noise_scale_duration for v in voices], np.float32),
            "speaking_rate": np.array([v.speaking_rate for v in voices], np.float32),
        }
        waves, lengths = self.session.run(None, feeds)
        return [waves[i, : int(n)] for i, n in enumerate(lengths)]
