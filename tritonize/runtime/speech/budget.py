"""The limit on one request's audio duration, one-shot and streamed.

The voice's config sets `max_audio_seconds` (the most any request may get); a request may ask for
less with the optional MAX_AUDIO_SECONDS input. The duration is only known as sentences are
synthesised, so the budget is spent sentence by sentence and synthesis stops at the first one past
it: a too-long text costs at most the limit's worth of compute, never the whole text's.
"""

from __future__ import annotations

import math

from tritonize.contract.speech import MAX_AUDIO
from tritonize.runtime.triton import InputError, optional_input


class AudioBudget:
    def __init__(self, limit_s: float, ceiling_s: float, rate: int, pause_samples: int, sentences: int, asked: bool):
        self.limit_s, self.ceiling_s, self.asked = limit_s, ceiling_s, asked
        self.max_samples = int(limit_s * rate)
        self.used = pause_samples * max(sentences - 1, 0)  # the pauses are known before any synthesis
        self._check()

    @classmethod
    def from_request(cls, request, ceiling_s: float, rate: int, pause_samples: int, sentences: int) -> "AudioBudget":
        raw = optional_input(request, MAX_AUDIO)
        if raw is None:
            return cls(ceiling_s, ceiling_s, rate, pause_samples, sentences, asked=False)
        limit = float(raw.reshape(-1)[0])
        if not math.isfinite(limit) or not 0 < limit <= ceiling_s:
            raise InputError(f"{MAX_AUDIO} must be in (0, {ceiling_s:g}] seconds (this voice's max_audio_seconds), got {limit:g}")
        return cls(limit, ceiling_s, rate, pause_samples, sentences, asked=True)

    def spend(self, samples: int) -> None:
        """Count one sentence's samples; past the limit, an error naming it."""
        self.used += samples
        self._check()

    def _check(self) -> None:
        if self.used <= self.max_samples:
            return
        if self.asked:
            limit = f"the request's {MAX_AUDIO}={self.limit_s:g} s"
        else:
            limit = f"this voice's max_audio_seconds={self.ceiling_s:g} s per request"
        raise InputError(f"TEXT makes more audio than {limit}: send a shorter text or split it over several requests")
