"""Model step: one engine (ONNX Runtime, or PyTorch on CUDA/CPU) over a batch gathered from many
requests, grouped into length buckets.

The Python backend does not batch for us: `execute` gets the requests that Triton's dynamic batcher
queued (of different sequence lengths, thanks to `allow_ragged_batch`) and must merge them itself.
Padding every row to the longest in the batch wastes compute (a 4-64-word mix padded into batches of
16 costs 2.3x the tokens), so rows are sorted by true length and cut into buckets whose padded token
count stays within `max_padding_ratio` of the real tokens (or a few tokens per row for short rows,
where one engine call's fixed cost outweighs the padding). Both counts are exported as Prometheus
counters so that padding waste is visible on /metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tritonize.contract.encoders import Buckets, EngineStep
from tritonize.contract.engines import EngineSpec
from tritonize.runtime.buckets import plan_buckets
from tritonize.runtime.triton import Counter, InputError, error_response, input_array, model_dir, parameters, response


@dataclass
class Rows:
    """All rows of one execution: token ids (each request's own padding) and true lengths."""

    ids: list[np.ndarray]  # per request, [rows, its own padded length]
    owner: np.ndarray  # row -> (request index, row in request)
    lengths: np.ndarray

    @classmethod
    def of_texts(cls, encodings) -> "Rows":
        """Tokenized texts (`tokenizers` encodings), each a request of one row to Rows, so that
        bucket_inputs copies each row's own tokens."""
        ids = [np.asarray(e.ids, dtype=np.int64)[None] for e in encodings]
        return cls(ids, np.array([(k, 0) for k in range(len(ids))], dtype=np.int64).reshape(-1, 2),
                   np.array([len(e.ids) for e in encodings], dtype=np.int64))

    def bucket_inputs(self, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        width = int(self.lengths[rows].max())
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            req, row = self.owner[r]
            n = self.lengths[r]
            ids[k, :n] = self.ids[req][row, :n]
            mask[k, :n] = 1
        return ids, mask


def scatter(rows: Rows, results: list[tuple[np.ndarray, np.ndarray]], ids_per_request: list[np.ndarray]) -> list[np.ndarray]:
    """Put each bucket's rows back into per-request arrays; per-token outputs keep each request's width."""
    per_token = results[0][1].ndim == 3
    tail = results[0][1].shape[2:] if per_token else results[0][1].shape[1:]
    outputs = [
        np.zeros((ids.shape[0], ids.shape[1], *tail) if per_token else (ids.shape[0], *tail), dtype=np.float32)
        for ids in ids_per_request
    ]
    for bucket, result in results:
        for k, r in enumerate(bucket):
            req, row = rows.owner[r]
            if per_token:  # copy the real tokens; padding stays zero
                n = rows.lengths[r]
                outputs[req][row, :n] = result[k, :n]
            else:
                outputs[req][row] = result[k]
    return outputs


def read_request(request) -> tuple[np.ndarray, np.ndarray]:
    ids = input_array(request, "INPUT_IDS")
    mask = input_array(request, "ATTENTION_MASK")
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise InputError(f"INPUT_IDS {list(ids.shape)} and ATTENTION_MASK {list(mask.shape)} must be equal [rows, tokens]")
    return ids.astype(np.int64, copy=False), mask


class EncoderEngine(Protocol):
    """The contract both engines keep: int64 ids and mask [rows, tokens] -> float32 hidden states
    [rows, tokens, hidden] or logits [rows, labels]."""

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def load_engine(folder: Path, output_name: str, spec: EngineSpec, args: dict | None = None, allow_spinning: str = "0") -> EncoderEngine:
    if spec.torch:
        from tritonize.runtime.encoders.engine_torch import TorchEncoder

        return TorchEncoder(folder, output_name, spec, args)
    from tritonize.runtime.encoders.engine_onnx import OnnxEncoder

    return OnnxEncoder(folder, output_name, spec, allow_spinning)


class Bucketed:
    """The engine over one execution's rows: cut into length buckets, one engine call each. Also what
    the chatbot's converter embeds its FAQ with, outside Triton."""

    def __init__(self, engine: EncoderEngine, buckets: Buckets):
        self.engine, self.buckets = engine, buckets

    def run(self, rows: Rows) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(row indices, mask, engine output) per bucket; an engine error (e.g. GPU out of memory) raises."""
        c = self.buckets
        results = []
        for b in plan_buckets(rows.lengths, c.max_padding_ratio, c.max_rows_per_run, c.min_padding_tokens):
            ids, mask = rows.bucket_inputs(b, c.pad_token_id)
            results.append((b, mask, self.engine.run(ids, mask)))
        return results


class BucketRunner(Bucketed):
    """`Bucketed` on a served step, with the padding counters. Shared by the model step of the ensemble
    and by the fused step."""

    def __init__(self, args: dict, p: dict[str, str], output_name: str):
        engine = load_engine(Path(model_dir(args)), output_name, EngineSpec.from_params(p), args, p.get("allow_spinning", "0"))
        super().__init__(engine, Buckets.from_params(p))
        labels = {"model": args["model_name"]}
        self.tokens_real = Counter("tritonize_tokens_real_total", "Tokens in the requests (no padding)", labels)
        self.tokens_computed = Counter("tritonize_tokens_computed_total", "Tokens the engine computed, padding included", labels)
        self.engine_runs = Counter("tritonize_engine_runs_total", "Engine calls (one per length bucket)", labels)

    def run(self, rows: Rows) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        results = super().run(rows)
        self.engine_runs.add(len(results))
        self.tokens_real.add(int(rows.lengths.sum()))
        self.tokens_computed.add(sum(len(b) * int(rows.lengths[b].max()) for b, _, _ in results))
        return results


class EncoderStep:
    """The ensemble's model step: INPUT_IDS, ATTENTION_MASK -> per-token hidden states or logits."""

    def initialize(self, args: dict) -> None:
        p = parameters(args)
        step = EngineStep.from_params(p)
        self.output_tensor = step.output_tensor
        self.runner = BucketRunner(args, p, step.output_name)

    def execute(self, requests):
        responses: list = [None] * len(requests)
        ids_per_request, owner, lengths, good = [], [], [], []
        for i, request in enumerate(requests):
            try:
                ids, mask = read_request(request)
            except InputError as e:
                responses[i] = error_response(e)
                continue
            good.append(i)
            k = len(ids_per_request)
            ids_per_request.append(ids)
            owner.extend((k, r) for r in range(ids.shape[0]))
            lengths.extend(np.maximum(mask.sum(axis=1), 1).tolist())
        if not good:
            return responses
        rows = Rows(ids_per_request, np.array(owner, dtype=np.int64).reshape(-1, 2), np.array(lengths, dtype=np.int64))
        try:
            results = self.runner.run(rows)
        except Exception as e:  # e.g. GPU out of memory: this execution's requests fail, the step keeps serving
            for i in good:
                responses[i] = error_response(e)
            return responses
        outputs = scatter(rows, [(b, out) for b, _, out in results], ids_per_request)
        for k, i in enumerate(good):
            responses[i] = response({self.output_tensor: outputs[k]})
        return responses
