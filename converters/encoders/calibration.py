"""Texts for int8: the calibration set (activation statistics) and the held-out set the accuracy report uses.

Both ship in the package as one text per line. A user's calibration file replaces the shipped set; the
held-out set never contains a calibration text, so the report measures texts the quantiser never saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT_CALIBRATION = HERE / "calibration_texts.txt"  # ~300 varied sentences, short and long, several languages
HELD_OUT = HERE / "accuracy_texts.txt"  # ~50 texts, none of them in the calibration set
MAX_CALIBRATION_TEXTS = 10_000


class CalibrationTextsError(ValueError):
    pass


@dataclass(frozen=True)
class TextSets:
    calibration: list[str]
    held_out: list[str]
    calibration_source: str  # "default" or the user's file

    @property
    def digest(self) -> str:
        """Part of the conversion's reuse key: other calibration texts make another int8 graph (and other
        held-out texts another report)."""
        return hashlib.sha256("\n".join(self.calibration + ["\0"] + self.held_out).encode()).hexdigest()[:16]


def read_texts(path: Path, field: str = "calibration_texts") -> list[str]:
    """Non-empty lines of a UTF-8 file; a clear error naming the field for a missing, unreadable or empty file."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationTextsError(f"{field}: {path} does not exist or is not a file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationTextsError(f"{field}: {path} is not UTF-8 text (byte {exc.start}): write one text per line in UTF-8") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise CalibrationTextsError(f"{field}: {path} has no texts (one text per line, blank lines ignored)")
    if len(texts) > MAX_CALIBRATION_TEXTS:
        raise CalibrationTextsError(f"{field}: {path} has {len(texts)} texts, more than the limit of {MAX_CALIBRATION_TEXTS}")
    return texts


def text_sets(calibration_file: Path | None = None, limit: int | None = None) -> TextSets:
    """The calibration texts (the user's file or the shipped set, the first `limit` of them) and the held-out
    texts that are not among them."""
    calibration = read_texts(calibration_file) if calibration_file else read_texts(DEFAULT_CALIBRATION)
    if limit is not None:
        if limit < 1:
            raise CalibrationTextsError(f"calibration_limit must be >= 1, not {limit}")
        calibration = calibration[:limit]
    seen = set(calibration)
    held_out = [t for t in read_texts(HELD_OUT, "held-out texts") if t not in seen]
    if not held_out:
        raise CalibrationTextsError("calibration_texts: every held-out text is in the calibration file, so int8 accuracy "
                                    "could not be measured on unseen texts; remove them from the file")
    return TextSets(calibration, held_out, str(calibration_file) if calibration_file else "default")
