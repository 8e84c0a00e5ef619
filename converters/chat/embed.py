"""Embed FAQ questions once, at conversion, with the code the served embedder runs: its tokenizer.json
through the runtime's tokenizer loader (same truncation), its engine step's parameters read back through
the contract (length buckets, padding, threads, engine), the runtime's engine and bucketing, and its
pooling. The stored vectors are then the ones the embedder returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonize.contract.encoders import Buckets, Pooling, Prompts
from tritonize.runtime.encoders.embedding_head import EmbeddingHead
from tritonize.contract.engines import EngineSpec
from tritonize.contract.model_config import config_parameters, read_config
from tritonize.contract.model_config import engine_model
from tritonize.contract.files import read_manifest
from tritonize.converters.repository import model_files
from tritonize.runtime.encoders.encoder import Bucketed, Rows, load_engine
from tritonize.runtime.encoders.postprocess import embedding_outputs
from tritonize.runtime.encoders.tokenizer import load_tokenizer

TEXTS_PER_EXECUTION = 256  # bounds memory; the buckets inside an execution are the served ones


class EmbedderError(ValueError):
    pass


class PipelineEmbedder:
    def __init__(self, repository: Path, name: str, threads: int = 0):
        manifest = read_manifest(repository, name)
        if manifest is None or "pipeline" not in manifest:
            raise EmbedderError(f"embedder {name!r} is not an encoder pipeline in {repository}; convert it first: "
                                f"tritonize convert bert --model CHECKPOINT --task embedding --name {name}")
        pipeline = manifest["pipeline"]
        if pipeline["task"] != "embedding":
            raise EmbedderError(f"embedder {name!r} is a {pipeline['task']} pipeline; the chatbot needs --task embedding")
        self.name, self.key = name, manifest.get("key", "")
        self.dims = int(pipeline.get("embedding_size") or pipeline["hidden_size"])
        files = model_files(repository, name)  # the engine's files, and tokenizer.json when fused
        step = engine_model(repository, name) or f"{name}_model"  # NAME when fused
        # The engine step's parameters (a native flavour's step, Triton's own, has none: the defaults).
        params = {"pad_token_id": str(pipeline["pad_token_id"]), **config_parameters(read_config(repository / step / "config.pbtxt"))}
        post = repository / name if step == name else repository / f"{name}_postprocess"
        # The embedder's own head (pooling, Dense, Normalize), with the Dense files beside its config.
        self.prompt = Prompts.from_params(config_parameters(read_config(repository / name / "config.pbtxt"))).default_prompt
        self.head = EmbeddingHead.load(Pooling.from_params(config_parameters(read_config(post / "config.pbtxt"))), post / "1")
        tokenizer_json = files / "tokenizer.json"
        if not tokenizer_json.exists():
            tokenizer_json = repository / f"{name}_tokenizer" / "1" / "tokenizer.json"
        self.tokenizer = load_tokenizer(tokenizer_json, int(pipeline["max_length"]))
        spec = EngineSpec.from_params(params)
        if threads:
            spec = EngineSpec(spec.engine, spec.device, spec.dtype, threads)
        self.engine = Bucketed(load_engine(files, "last_hidden_state", spec), Buckets.from_params(params))

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dims], pooled (and L2-normalised) as the served embedder returns them."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(texts), TEXTS_PER_EXECUTION):
            rows = Rows.of_texts(self.tokenizer.encode_batch([self.prompt + t for t in texts[start : start + TEXTS_PER_EXECUTION]]))
            for bucket, mask, hidden in self.engine.run(rows):
                out[start + bucket] = embedding_outputs(hidden, mask, self.head)["EMBEDDING"]
        return out
