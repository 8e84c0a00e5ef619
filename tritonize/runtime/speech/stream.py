"""Streaming speech (decoupled model): one response per sentence, so the first audio arrives while
the rest of the text is still being synthesised. Same front end, engine and seeds per sentence as the
one-shot ensemble, so the concatenated stream equals the one-shot audio."""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tritonize.contract.speech import Speech
from tritonize.runtime.triton import InputError, input_array, model_dir, parameters, pb, stream_error
from tritonize.runtime.speech.audio import to_pcm16
from tritonize.runtime.speech.budget import AudioBudget
from tritonize.runtime.speech.frontend import SpeechFrontend
from tritonize.runtime.speech.synthesis import Voice, load_engine


class StreamingSpeechStep:
    def initialize(self, args: dict) -> None:
        p = parameters(args)
        speech = Speech.from_params(p)
        self.frontend = SpeechFrontend.load(model_dir(args), asdict(speech.limits))
        self.engine = load_engine(Path(model_dir(args)), p, args)
        self.rate = speech.sampling_rate
        self.pause = np.zeros(speech.pause_samples, np.float32)
        self.max_audio_s = speech.limits.max_audio_seconds

    def execute(self, requests):
        for request in requests:  # each stream on its own thread: execute returns at once
            threading.Thread(target=self.stream, args=(request,), daemon=True).start()
        return None

    def stream(self, request) -> None:
        u = pb()
        sender = request.get_response_sender()
        try:
            voice = Voice.from_request(request)
            rows = self.frontend.sentences(self.frontend_text(request))
            budget = AudioBudget.from_request(request, self.max_audio_s, self.rate, len(self.pause), len(rows))
            for s, row in enumerate(rows):
                if sender.is_cancelled():
                    break
                (w,) = self.engine.run([np.array(row, np.int64)], [voice], [voice.seed + s])
                budget.spend(len(w))  # past the limit: the sentences sent so far, then the error
                if s < len(rows) - 1:
                    w = np.concatenate([w, self.pause])
                outputs = {"AUDIO": to_pcm16(w)[None], "SAMPLE_RATE": np.array([[self.rate]], np.int32),
                           "SENTENCE": np.array([[s]], np.int32)}
                sender.send(u.InferenceResponse([u.Tensor(k, v) for k, v in outputs.items()]))
            sender.send(flags=u.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except InputError as e:
            sender.send(stream_error(e), flags=u.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as e:  # never leave a stream open
            sender.send(stream_error(RuntimeError(f"synthesis failed: {e}")), flags=u.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def frontend_text(self, request) -> str:
        from tritonize.runtime.text_inputs import decode_texts

        (text,) = decode_texts(input_array(request, "TEXT"), self.frontend.limits["max_text_bytes"])
        return text
