"""Embed FAQ questions once, at conversion, with the served embedder's own files: its tokenizer.json (same
truncation) and its model.onnx in ONNX Runtime, then the served postprocess (mean pooling + L2, from the
module the runtime shares). The stored vectors are then the ones the embedder ensemble returns, up to
float32 rounding of different padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonize.converters.repository import model_files, read_manifest
from tritonize.runtime.pooling import l2_normalize, mean_pool


class EmbedderError(ValueError):
    pass


class PipelineEmbedder:
    def __init__(self, repository: Path, name: str, threads: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        manifest = read_manifest(repository, name)
        if manifest is None or "pipeline" not in manifest:
            raise EmbedderError(f"embedder {name!r} is not an encoder pipeline in {repository}; convert it first: "
                                f"tritonize convert bert --model CHECKPOINT --task embedding --name {name}")
        pipeline = manifest["pipeline"]
        if pipeline["task"] != "embedding":
            raise EmbedderError(f"embedder {name!r} is a {pipeline['task']} pipeline; the chatbot needs --task embedding")
        self.name, self.key = name, manifest.get("key", "")
        self.dims = int(pipeline["hidden_size"])
        self.pad_id = int(pipeline["pad_token_id"])
        files = model_files(repository, name)  # model.onnx, and tokenizer.json when fused
        tokenizer_json = files / "tokenizer.json"
        if not tokenizer_json.exists():
            tokenizer_json = repository / f"{name}_tokenizer" / "1" / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.enable_truncation(max_length=int(pipeline["max_length"]))
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(files / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """float32 [len(texts), dims], L2-normalised; rows are batched by length so padding stays small."""
        encodings = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[r].ids) for r in rows)
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for k, r in enumerate(rows):
                n = len(encodings[r].ids)
                ids[k, :n], mask[k, :n] = encodings[r].ids, 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(["last_hidden_state"], feeds)[0]
            out[rows] = l2_normalize(mean_pool(hidden, mask))
        return out
