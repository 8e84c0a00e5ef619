"""Tokenizer step: TEXT (one UTF-8 string per row) -> INPUT_IDS, ATTENTION_MASK.

Uses the checkpoint's own fast tokenizer (`tokenizer.json`, the Rust `tokenizers` library, no
transformers). Every request is validated on its own, so one bad request fails alone; the valid rows
of all requests in the execution are encoded in one call, then each request is padded to its own
longest row (never to another request's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from runtime.triton import Counter, InputError, error_response, input_array, model_dir, parameters, response


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()  # we pad per request, see pad_rows
    return tok


def decode_texts(raw: np.ndarray, max_text_bytes: int, field: str = "TEXT") -> list[str]:
    """Check a BYTES tensor of shape [rows, 1] and decode it; errors name the field, row and limit."""
    if raw.ndim != 2 or raw.shape[1] != 1:
        raise InputError(f"{field} must have shape [rows, 1] (one string per row), got {list(raw.shape)}")
    if raw.shape[0] == 0:
        raise InputError(f"{field} has no rows: send at least one string")
    texts = []
    for i, item in enumerate(raw[:, 0]):
        data = item if isinstance(item, bytes) else str(item).encode()
        if len(data) > max_text_bytes:
            raise InputError(f"{field}[{i}] is {len(data):,} bytes; the limit is {max_text_bytes:,} bytes per row")
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InputError(f"{field}[{i}] is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return texts


def pad_rows(rows: list[list[int]], pad_id: int, multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id rows to the longest (rounded up to `multiple_of`); returns ids and mask."""
    longest = max(len(r) for r in rows)
    if multiple_of > 1:
        longest = -(-longest // multiple_of) * multiple_of
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


class TokenizerStep:
    def initialize(self, args: dict) -> None:
        p = parameters(args)
        self.max_length = int(p["max_length"])
        self.max_text_bytes = int(p.get("max_text_bytes", 1_000_000))
        self.pad_id = int(p.get("pad_token_id", 0))
        # The native ORT flavour can only batch equal shapes, so it pads to length buckets.
        self.pad_multiple = int(p.get("pad_to_multiple_of", 1))
        self.token_type_ids = p.get("emit_token_type_ids", "false") == "true"
        self.tokenizer = load_tokenizer(Path(model_dir(args)) / "tokenizer.json", self.max_length)
        self.truncated = Counter(
            "tritonize_truncated_texts_total", "Texts cut to the model's maximum length", {"model": args["model_name"]}
        )

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batch: list[tuple[int, list[str]]] = []
        for i, request in enumerate(requests):
            try:
                batch.append((i, decode_texts(input_array(request, "TEXT"), self.max_text_bytes)))
            except InputError as e:
                responses[i] = error_response(e)
        if batch:
            encodings = self.tokenizer.encode_batch([t for _, texts in batch for t in texts])
            self.truncated.add(sum(1 for e in encodings if e.overflowing))
            start = 0
            for i, texts in batch:
                rows = [e.ids for e in encodings[start : start + len(texts)]]
                start += len(texts)
                ids, mask = pad_rows(rows, self.pad_id, self.pad_multiple)
                outputs = {"INPUT_IDS": ids, "ATTENTION_MASK": mask}
                if self.token_type_ids:
                    outputs["TOKEN_TYPE_IDS"] = np.zeros_like(ids)
                responses[i] = response(outputs)
        return responses
