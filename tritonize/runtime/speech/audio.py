"""Audio encoder: per-sentence float waveforms -> one 16-bit PCM signal (and a WAV file)."""

from __future__ import annotations

import io
import wave

import numpy as np

from tritonize.contract.speech import Speech
from tritonize.runtime.triton import InputError, error_response, input_array, parameters, response


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def join_sentences(waves: list[np.ndarray], pause_samples: int) -> np.ndarray:
    """Sentences in order with a pause between them (none after the last)."""
    gap = np.zeros(pause_samples, np.float32)
    parts = []
    for i, w in enumerate(waves):
        parts.append(w)
        if i < len(waves) - 1:
            parts.append(gap)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def wav_bytes(pcm: np.ndarray, sampling_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sampling_rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


class AudioStep:
    def initialize(self, args: dict) -> None:
        speech = Speech.from_params(parameters(args))
        self.rate, self.pause = speech.sampling_rate, speech.pause_samples

    def execute(self, requests):
        out = []
        for request in requests:
            try:
                waves, lengths = input_array(request, "WAVEFORM")[0], input_array(request, "AUDIO_LENGTHS")[0]
                if len(waves) != len(lengths):
                    raise InputError(f"WAVEFORM has {len(waves)} rows but AUDIO_LENGTHS {len(lengths)}")
                pcm = to_pcm16(join_sentences([w[: int(n)] for w, n in zip(waves, lengths)], self.pause))
                outputs = {"AUDIO": pcm[None], "SAMPLE_RATE": np.array([[self.rate]], np.int32)}
                outputs["WAV"] = np.array([[wav_bytes(pcm, self.rate)]], dtype=object)
                out.append(response(outputs))
            except InputError as e:
                out.append(error_response(e))
        return out
