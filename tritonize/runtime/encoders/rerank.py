"""Reranking with a cross-encoder: QUERY (one string) and DOCUMENTS (N strings) -> SCORES (N, the
checkpoint's activation on its relevance logit), ORDER (the indices by descending score) and
TOKEN_COUNT (the real tokens of the request's pairs).

`Reranker` is the whole computation outside Triton: the checkpoint's fast tokenizer on (query,
document) pairs, truncated 'longest_first' to the model's limit as `CrossEncoder.predict` tokenizes
them (the longer side loses a token at a time, so a long document is cut first and the query only
when it is the longer one), with token type ids (segment B is 1 for BERT); the pairs cut into length
buckets (`tritonize.runtime.buckets`) and run by ONNX Runtime; the activation. The converter checks
it against `CrossEncoder.predict`, the benchmark runs it in process, and `RerankStep` serves it.

`RerankStep` is one Python-backend model: Triton's dynamic batcher hands it the requests that queued
(DOCUMENTS is a ragged input, so requests with different numbers of documents batch together); it
checks each request on its own (one bad request fails alone), tokenizes the pairs of all of them in
one call and runs them in buckets together, then splits the scores back per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tritonize.contract.encoders import Buckets, Reranking, Served, Tokenizing
from tritonize.runtime.buckets import plan_buckets
from tritonize.runtime.text_inputs import decode_texts
from tritonize.runtime.triton import Counter, InputError, error_response, input_array, model_dir, parameters, response


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # no overflow for large |x|


ACTIVATIONS = {"sigmoid": _sigmoid, "identity": lambda x: x, "tanh": np.tanh}


def pair_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """The checkpoint's tokenizer as CrossEncoder.predict uses it on pairs: truncation 'longest_first'."""
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length, strategy="longest_first")
    tok.no_padding()  # each bucket is padded to its own longest pair
    return tok


class CrossEncoderEngine:
    """ONNX Runtime on the exported sequence-classification graph: ids, mask and token types -> one logit per pair."""

    def __init__(self, model_path: Path, threads: int = 0, allow_spinning: str = "0"):
        from tritonize.runtime.encoders.engine_onnx import encoder_session

        self.session = encoder_session(Path(model_path), threads, allow_spinning)
        self.graph_inputs = {i.name for i in self.session.get_inputs()}

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.graph_inputs:
            feeds["token_type_ids"] = types
        return self.session.run(["logits"], feeds)[0][:, 0]


@dataclass
class Pairs:
    """Tokenized pairs: ids and token types per pair, and their lengths."""

    ids: list[list[int]]
    types: list[list[int]]
    lengths: np.ndarray

    @classmethod
    def of(cls, encodings) -> "Pairs":
        return cls([e.ids for e in encodings], [e.type_ids for e in encodings], np.array([len(e.ids) for e in encodings], dtype=np.int64))

    def bucket_inputs(self, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = int(self.lengths[rows].max())
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            n = int(self.lengths[r])
            ids[k, :n], types[k, :n], mask[k, :n] = self.ids[r], self.types[r], 1
        return ids, mask, types


class Reranker:
    """Tokenizer, engine, length buckets and activation: scores for (query, document) pairs."""

    def __init__(self, tokenizer_json: Path, model_path: Path, max_length: int, buckets: Buckets, activation: str,
                 allow_spinning: str = "0"):
        self.tokenizer = pair_tokenizer(tokenizer_json, max_length)
        self.engine = CrossEncoderEngine(model_path, buckets.intra_op_threads, allow_spinning)
        self.buckets, self.activation = buckets, ACTIVATIONS[activation]

    def encode(self, pairs: list[tuple[str, str]]):
        return self.tokenizer.encode_batch(pairs)

    def run(self, pairs: Pairs) -> tuple[np.ndarray, int, int]:
        """Scores in pair order, the engine calls and the tokens computed (padding included)."""
        c = self.buckets
        scores = np.empty(len(pairs.lengths), dtype=np.float32)
        buckets = plan_buckets(pairs.lengths, c.max_padding_ratio, c.max_rows_per_run, c.min_padding_tokens)
        computed = 0
        for b in buckets:
            ids, mask, types = pairs.bucket_inputs(b, c.pad_token_id)
            scores[b] = self.activation(self.engine.run(ids, mask, types).astype(np.float32))
            computed += ids.size
        return scores, len(buckets), computed

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        """One request's scores, in the documents' order (what the converter checks and the benchmark runs)."""
        return self.run(Pairs.of(self.encode([(query, d) for d in documents])))[0]


def order_of(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; equal scores keep the documents' order."""
    return np.argsort(-scores, kind="stable").astype(np.int64)


def read_rerank_request(request, max_text_bytes: int, max_documents: int) -> tuple[str, list[str]]:
    """The query and the documents of one request, each checked: the error names the field and the limit."""
    query = input_array(request, "QUERY")
    if query.size != 1:
        raise InputError(f"QUERY must be one string per request, got shape {list(query.shape)}")
    text = decode_texts(query.reshape(1, 1), max_text_bytes, "QUERY")[0]
    if not text.strip():
        raise InputError("QUERY is empty: send the text to rank the documents against")
    docs = input_array(request, "DOCUMENTS")
    if docs.ndim != 2 or docs.shape[0] != 1:
        raise InputError(f"DOCUMENTS must have shape [1, documents] (one request's documents), got {list(docs.shape)}")
    if docs.shape[1] == 0:
        raise InputError("DOCUMENTS has no strings: send at least one document")
    if docs.shape[1] > max_documents:
        raise InputError(f"DOCUMENTS has {docs.shape[1]:,} strings; the limit is {max_documents:,} per request")
    return text, decode_texts(docs.reshape(-1, 1), max_text_bytes, "DOCUMENTS")


class RerankStep:
    """The served rerank pipeline: one Python-backend model under the pipeline's name."""

    def initialize(self, args: dict) -> None:
        p = parameters(args)
        Served.from_params(p)  # checks the task
        tokenizing, rerank = Tokenizing.from_params(p), Reranking.from_params(p)
        self.max_text_bytes, self.max_documents = tokenizing.max_text_bytes, rerank.max_documents
        folder = Path(model_dir(args))
        buckets = Buckets.from_params(p)
        self.reranker = Reranker(folder / "tokenizer.json", folder / "model.onnx", tokenizing.max_length, buckets, rerank.activation,
                                 p.get("allow_spinning", "0"))
        labels = {"model": args["model_name"]}
        self.tokens_real = Counter("tritonize_tokens_real_total", "Tokens in the requests (no padding)", labels)
        self.tokens_computed = Counter("tritonize_tokens_computed_total", "Tokens the engine computed, padding included", labels)
        self.engine_runs = Counter("tritonize_engine_runs_total", "Engine calls (one per length bucket)", labels)
        self.truncated = Counter("tritonize_truncated_texts_total", "Texts cut to the model's maximum length", labels)

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batch: list[tuple[int, int]] = []  # (request index, documents)
        pairs: list[tuple[str, str]] = []
        for i, request in enumerate(requests):
            try:
                query, docs = read_rerank_request(request, self.max_text_bytes, self.max_documents)
            except InputError as e:
                responses[i] = error_response(e)
                continue
            batch.append((i, len(docs)))
            pairs.extend((query, d) for d in docs)
        if not batch:
            return responses
        encodings = self.reranker.encode(pairs)
        self.truncated.add(sum(1 for e in encodings if e.overflowing))
        tokenized = Pairs.of(encodings)
        try:
            if not tokenized.lengths.min(initial=1):
                raise InputError("a (query, document) pair has no tokens: send text the tokenizer can encode")
            scores, runs, computed = self.reranker.run(tokenized)
        except Exception as e:  # this execution's requests fail, the step keeps serving
            for i, _ in batch:
                responses[i] = error_response(e)
            return responses
        self.engine_runs.add(runs)
        self.tokens_real.add(int(tokenized.lengths.sum()))
        self.tokens_computed.add(computed)
        start = 0
        for i, n in batch:
            mine = scores[start : start + n]
            tokens = int(tokenized.lengths[start : start + n].sum())
            start += n
            responses[i] = response({"SCORES": mine[None], "ORDER": order_of(mine)[None],
                                     "TOKEN_COUNT": np.array([[tokens]], dtype=np.int64)})
        return responses
