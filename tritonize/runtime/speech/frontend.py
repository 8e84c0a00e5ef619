"""Speech front end: TEXT -> normalised sentences -> the voice's character ids, [1, sentences, tokens].

Re-implements what Hugging Face's VitsTokenizer does for a character vocabulary (lower-casing,
dropping characters the voice does not have, a blank id between characters) from the `frontend.json`
the converter saved, so serving needs no transformers.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tritonize.contract.speech import Speech
from tritonize.runtime.text_inputs import decode_texts, pad_rows
from tritonize.runtime.triton import InputError, error_response, input_array, model_dir, parameters, response
from tritonize.runtime.speech.text import normalize_english, split_sentences


class SpeechFrontend:
    def __init__(self, spec: dict, limits: dict):
        self.vocab: dict[str, int] = spec["vocab"]
        self.add_blank, self.normalize = spec["add_blank"], spec["normalize"]
        self.blank_id, self.unk_id = spec["blank_id"], spec["unk_id"]
        self.limits = limits

    @classmethod
    def load(cls, folder: str | Path, limits: dict) -> "SpeechFrontend":
        return cls(json.loads((Path(folder) / "frontend.json").read_text()), limits)

    def tokens(self, sentence: str) -> list[int]:
        """VitsTokenizer's encoding of one sentence (normalize: lower-case, keep vocabulary characters)."""
        if self.normalize:
            chars = [c if c in self.vocab else c.lower() for c in sentence]
            ids = [self.vocab[c] for c in "".join(c for c in chars if c in self.vocab).strip()]
        else:
            ids = [self.vocab.get(c, self.unk_id) for c in sentence]
        if self.add_blank and ids:
            spaced = [self.blank_id] * (2 * len(ids) + 1)
            spaced[1::2] = ids
            ids = spaced
        return ids

    def sentences(self, text: str) -> list[list[int]]:
        """Token ids per speakable sentence; errors name TEXT and the limit."""
        if not text.strip():
            raise InputError("TEXT is empty: send at least one word to speak")
        parts = split_sentences(normalize_english(text), self.limits["max_sentence_chars"])
        rows = [ids for ids in (self.tokens(p) for p in parts) if len(ids) > (1 if self.add_blank else 0)]
        if not rows:
            raise InputError("TEXT has no characters this voice can speak (only punctuation or characters outside its alphabet)")
        if len(rows) > self.limits["max_sentences"]:
            raise InputError(f"TEXT has {len(rows):,} sentences; the limit is {self.limits['max_sentences']:,} per request")
        return rows

    def encode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (text,) = decode_texts(raw, self.limits["max_text_bytes"])  # the ensemble's max_batch_size is 1
        ids, mask = pad_rows(self.sentences(text), self.blank_id)
        return ids[None], mask[None]


class FrontendStep:
    def initialize(self, args: dict) -> None:
        self.frontend = SpeechFrontend.load(model_dir(args), asdict(Speech.from_params(parameters(args)).limits))

    def execute(self, requests):
        out = []
        for request in requests:
            try:
                ids, mask = self.frontend.encode(input_array(request, "TEXT"))
                out.append(response({"INPUT_IDS": ids, "ATTENTION_MASK": mask}))
            except InputError as e:
                out.append(error_response(e))
        return out
