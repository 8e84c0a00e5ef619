"""Request text and token rows, shared by every family's steps: decode a BYTES tensor with clear
errors, right-pad token rows."""

from __future__ import annotations

import numpy as np

from tritonize.runtime.triton import InputError


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


def pad_rows(rows: list[list[int]], pad_id: int, multiple_of: int = 1, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id rows to the longest, rounded up to `multiple_of` but never past `max_length`
    (the model's position table, a TensorRT profile's max); returns ids and mask."""
    longest = max(len(r) for r in rows)
    if multiple_of > 1:
        longest = -(-longest // multiple_of) * multiple_of
        if max_length is not None:
            longest = min(longest, max(max_length, max(len(r) for r in rows)))
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask
