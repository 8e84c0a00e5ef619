"""A speech pipeline's parameters: the voice's (every step: rate, limits, the rows' minimum padding) and
the synthesis step's (rows per engine run, padding, threads)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonize.contract.fields import Parameters, at_least

# Optional input of the ensemble and the stream: a tighter limit on the audio's duration than the voice's.
MAX_AUDIO = "MAX_AUDIO_SECONDS"


@dataclass(frozen=True)
class SpeechLimits:
    max_text_bytes: int = 200_000
    max_sentence_chars: int = 300  # longer sentences are cut at commas, then spaces
    max_sentences: int = 2_000
    pause_ms: int = 120  # silence between sentences
    # The longest audio one request may produce (one-shot or streamed); a request may ask for less
    # (MAX_AUDIO_SECONDS). Without it, 100,000 characters made ~50 minutes (~260 MB) in one response.
    # Voices converted before the limit existed lack it, and get this default.
    max_audio_seconds: float = 600.0

    def __post_init__(self) -> None:
        at_least(self, 1, "max_text_bytes", "max_sentence_chars", "max_sentences")
        at_least(self, 0, "pause_ms")
        if not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be > 0, got {self.max_audio_seconds}")


@dataclass(frozen=True)
class Speech(Parameters):
    """On every step of the pipeline and the stream."""

    sampling_rate: int
    limits: SpeechLimits = field(default_factory=SpeechLimits)
    min_tokens: int = 1  # rows are padded at least to this (the traced VITS attention: converters/speech/vits.py)

    def __post_init__(self) -> None:
        at_least(self, 1, "sampling_rate", "min_tokens")

    @property
    def pause_samples(self) -> int:
        return int(self.sampling_rate * self.limits.pause_ms / 1000)


@dataclass(frozen=True)
class Synthesis(Parameters):
    """The model step's (the stream step writes only its threads)."""

    max_rows_per_run: int = 16
    # Rows of a run may pad up to this x their real tokens. On CPU a padded VITS batch costs more than its
    # rows one by one (runtime/speech/synthesis.py), so 1.0: only rows of equal length share a run.
    max_padding_ratio: float = 1.0
    intra_op_threads: int = 0

    def __post_init__(self) -> None:
        at_least(self, 1, "max_rows_per_run")
        at_least(self, 1.0, "max_padding_ratio")
        at_least(self, 0, "intra_op_threads")
