"""A chatbot's FAQ file: JSON Lines or CSV rows of `{id, question, answer}`, read with errors that name the
file, the line, the field and the limit.

Checked: the file is UTF-8; the header (CSV) or every object (JSON Lines) has the three fields; ids are
unique and not one of the chatbot's reserved SOURCE values; no field is empty or over its limit; no row is
over MAX_ROW_BYTES. Other CSV columns and JSON keys are ignored.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("id", "question", "answer")
RESERVED_IDS = ("generated", "no-match")  # SOURCE values of a generated answer and of no match
MAX_ID_CHARS = 128
MAX_QUESTION_CHARS = 1_000
MAX_ANSWER_CHARS = 8_000
MAX_ROW_BYTES = 16_384
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


class FaqError(ValueError):
    """A FAQ file the chatbot cannot use; the message names the file, the line and the field."""


@dataclass(frozen=True)
class FaqEntry:
    id: str
    question: str
    answer: str

    def __post_init__(self):
        limits = {"id": MAX_ID_CHARS, "question": MAX_QUESTION_CHARS, "answer": MAX_ANSWER_CHARS}
        for name, limit in limits.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                raise FaqError(f"{name} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise FaqError(f"{name} is empty")
            if len(value) > limit:
                raise FaqError(f"{name} is {len(value):,} characters; the limit is {limit:,}")
        if self.id != self.id.strip():
            raise FaqError(f"id {self.id!r} has leading or trailing spaces")
        if self.id in RESERVED_IDS:
            raise FaqError(f"id {self.id!r} is reserved (the chatbot's SOURCE for {'generated answers' if self.id == 'generated' else 'no match'})")


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM from spreadsheet exports is fine
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FaqError(f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} on line {line}); save the file as UTF-8") from None


def _jsonl_rows(path: Path, text: str):
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line.encode()) > MAX_ROW_BYTES:
            raise FaqError(f"{path} line {n}: the row is {len(line.encode()):,} bytes; the limit is {MAX_ROW_BYTES:,}")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FaqError(f"{path} line {n}: not a JSON object ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise FaqError(f"{path} line {n}: expected a JSON object with {', '.join(FIELDS)}, got {type(row).__name__}")
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise FaqError(f"{path} line {n}: missing field(s) {', '.join(missing)}; each row needs {', '.join(FIELDS)}")
        if isinstance(row["id"], int) and not isinstance(row["id"], bool):
            row["id"] = str(row["id"])  # numeric ids are common in exports
        yield n, row


def _csv_rows(path: Path, text: str):
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [f for f in FIELDS if f not in header]
    if missing:
        raise FaqError(f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}")
    reader.fieldnames = header
    for row in reader:
        n = reader.line_num
        size = sum(len(str(v).encode()) for v in row.values() if v is not None)
        if size > MAX_ROW_BYTES:
            raise FaqError(f"{path} line {n}: the row is {size:,} bytes; the limit is {MAX_ROW_BYTES:,}")
        if None in row:  # more cells than header columns
            raise FaqError(f"{path} line {n}: more cells than the header's {len(header)} columns (quote cells that hold commas)")
        yield n, {k: (v if v is not None else "") for k, v in row.items()}


def read_faq(path: str | Path) -> list[FaqEntry]:
    """The entries of a FAQ file, in file order."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise FaqError(f"{path}: unknown FAQ format {path.suffix!r}; use JSON Lines (.jsonl) or CSV (.csv)")
    if not path.is_file():
        raise FaqError(f"{path}: no such file")
    text = _decode(path, path.read_bytes())
    entries: list[FaqEntry] = []
    first_line: dict[str, int] = {}
    for n, row in (_jsonl_rows if kind == "jsonl" else _csv_rows)(path, text):
        try:
            entry = FaqEntry(row["id"], row["question"], row["answer"])
        except FaqError as e:
            raise FaqError(f"{path} line {n}: {e}") from None
        if entry.id in first_line:
            raise FaqError(f"{path} line {n}: duplicate id {entry.id!r} (first on line {first_line[entry.id]})")
        first_line[entry.id] = n
        entries.append(entry)
    if not entries:
        raise FaqError(f"{path}: no entries; each row needs {', '.join(FIELDS)}")
    return entries


def demo_faq() -> Path:
    """The FAQ about tritonize itself that ships with the package (`make demo`, tests)."""
    return Path(__file__).with_name("demo_faq.jsonl")
