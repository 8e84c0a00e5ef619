"""VITS synthesis (ONNX Runtime, or PyTorch on CUDA/CPU): sentences of all queued requests, batched by length.

Each sentence is one row with its own seed (the request's seed + the sentence's index), noise scales
and speaking rate, so a row's audio is the same whatever else shares its batch; each row's true
length in samples comes back with it and nothing past it is ever served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from tritonize.contract.engines import EngineSpec
from tritonize.contract.speech import Speech, Synthesis
from tritonize.runtime.buckets import plan_buckets
from tritonize.runtime.speech.budget import AudioBudget
from tritonize.runtime.speech.voice import Voice
from tritonize.runtime.triton import Counter, InputError, error_response, input_array, model_dir, parameters, response

__all__ = ["SpeechEngine", "SynthesisStep", "Voice", "load_engine"]


class SpeechEngine(Protocol):
    """The contract both VITS engines keep: token-id rows, each with its voice and seed -> each row's
    float32 waveform at its true length, the same whatever else shares the call."""

    def run(self, rows: list[np.ndarray], voices: list[Voice], seeds: list[int]) -> list[np.ndarray]: ...


def load_engine(folder: Path, params: dict[str, str], args: dict | None = None) -> SpeechEngine:
    spec = EngineSpec.from_params(params)
    if spec.torch:
        from tritonize.runtime.speech.engine_torch import TorchVitsEngine

        return TorchVitsEngine(folder, spec, Speech.from_params(params).min_tokens, args)
    from tritonize.runtime.speech.engine_onnx import VitsEngine

    return VitsEngine(Path(folder) / "model.onnx", spec.threads, Speech.from_params(params).min_tokens)


class SynthesisStep:
    def initialize(self, args: dict) -> None:
        p = parameters(args)
        self.engine = load_engine(Path(model_dir(args)), p, args)
        synthesis, speech = Synthesis.from_params(p), Speech.from_params(p)
        # On CPU a padded VITS batch costs more than its rows run one by one (measured at MMS-TTS size:
        # real-time factor 0.38 batched vs 0.24 sentence by sentence; with a 1.05 cap still 0.33), so by
        # default only rows of equal length share a run. Raise it for the GPU, where batching pays.
        self.max_rows, self.max_padding_ratio = synthesis.max_rows_per_run, synthesis.max_padding_ratio
        self.rate, self.max_audio_s, self.pause = speech.sampling_rate, speech.limits.max_audio_seconds, speech.pause_samples
        labels = {"model": args["model_name"]}
        self.tokens_real = Counter("tritonize_tokens_real_total", "Tokens in the requests (no padding)", labels)
        self.tokens_computed = Counter("tritonize_tokens_computed_total", "Tokens the engine computed, padding included", labels)
        self.engine_runs = Counter("tritonize_engine_runs_total", "Engine calls (one per length bucket)", labels)

    def execute(self, requests):
        responses: list = [None] * len(requests)
        rows, owners, voices, seeds, budgets = [], [], [], [], {}
        for i, request in enumerate(requests):
            try:
                voice = Voice.from_request(request)
                ids, mask = input_array(request, "INPUT_IDS")[0], input_array(request, "ATTENTION_MASK")[0]
                budgets[i] = AudioBudget.from_request(request, self.max_audio_s, self.rate, self.pause, len(ids))
            except InputError as e:
                responses[i] = error_response(e)
                continue
            for s, (r, m) in enumerate(zip(ids, mask)):
                rows.append(r[: int(m.sum())])
                owners.append((i, s))
                voices.append(voice)
                seeds.append(voice.seed + s)
        try:
            waves = self.synthesize(rows, owners, voices, seeds, budgets, responses)
        except Exception as e:  # e.g. GPU out of memory: this execution's requests fail, the step keeps serving
            for i in {i for i, _ in owners}:
                responses[i] = responses[i] or error_response(e)
            return responses
        per_request: dict[int, list[np.ndarray]] = {}
        for (i, s), w in zip(owners, waves):
            if responses[i] is None:
                per_request.setdefault(i, []).append(w)
        for i, ws in per_request.items():
            wave = np.zeros((1, len(ws), max(len(w) for w in ws)), np.float32)
            for s, w in enumerate(ws):
                wave[0, s, : len(w)] = w
            responses[i] = response({"WAVEFORM": wave, "AUDIO_LENGTHS": np.array([[len(w) for w in ws]], np.int64)})
        return responses

    def synthesize(self, rows, owners, voices, seeds, budgets: dict[int, AudioBudget], responses: list) -> list:
        """Every row's waveform, length bucket by bucket; a request past its audio budget gets its error
        in `responses` and none of its remaining rows is run."""
        waves: list = [None] * len(rows)
        if not rows:
            return waves
        lengths = np.array([len(r) for r in rows], np.int64)
        runs = computed = 0
        for bucket in plan_buckets(lengths, self.max_padding_ratio, self.max_rows):
            bucket = [k for k in bucket if responses[owners[k][0]] is None]
            if not bucket:
                continue
            out = self.engine.run([rows[k] for k in bucket], [voices[k] for k in bucket], [seeds[k] for k in bucket])
            runs, computed = runs + 1, computed + len(bucket) * int(lengths[bucket].max())
            for k, w in zip(bucket, out):
                waves[k] = w
                i = owners[k][0]
                try:
                    if responses[i] is None:
                        budgets[i].spend(len(w))
                except InputError as e:
                    responses[i] = error_response(e)
        self.engine_runs.add(runs)
        self.tokens_real.add(int(lengths.sum()))
        self.tokens_computed.add(computed)
        return waves
