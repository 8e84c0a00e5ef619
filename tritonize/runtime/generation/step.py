"""The served generator: a decoupled Python-backend model around `tritonize.runtime.generation.engine.Engine`.

`execute` validates each request on Triton's thread (a bad request is answered with an error naming the
field and the limit, and never reaches the engine), tokenizes the prompt, hands it to the engine
thread and returns at once; responses are sent from the engine thread as tokens are produced.

Input: TEXT (BYTES [1]). Request parameters: see `tritonize.runtime.generation.params.PARAMETERS`.
Outputs of every response: TEXT (the new piece, or the whole text for `stream=false`), TOKEN_IDS (ids
that piece came from), FINISH_REASON ('' until the final response: eos | length | stop | cancelled),
PROMPT_TOKENS (the prompt's length in tokens, for usage accounting).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tritonize.contract.generation import Generator
from tritonize.runtime.generation.engine import COUNTERS, Engine, Job
from tritonize.runtime.generation.models import load_model
from tritonize.runtime.generation.params import fit_to_context, parse
from tritonize.runtime.generation.text import TokenBytes
from tritonize.runtime.text_inputs import decode_texts
from tritonize.runtime.triton import Counter, Gauge, InputError, input_array, model_dir, parameters, pb, stream_error


class TritonSink:
    """Delivers engine output through a request's decoupled response sender."""

    def __init__(self, sender, prompt_tokens: int = 0):
        self.sender = sender
        self.prompt_tokens = np.array([prompt_tokens], dtype=np.int64)

    def piece(self, text: str, token_ids: list[int], finish_reason: str | None) -> None:
        u = pb()
        outputs = [
            u.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_)),
            u.Tensor("TOKEN_IDS", np.asarray(token_ids, dtype=np.int64)),
            u.Tensor("FINISH_REASON", np.array([(finish_reason or "").encode()], dtype=np.object_)),
            u.Tensor("PROMPT_TOKENS", self.prompt_tokens),
        ]
        flags = u.TRITONSERVER_RESPONSE_COMPLETE_FINAL if finish_reason else 0
        self.sender.send(u.InferenceResponse(output_tensors=outputs), flags=flags)

    def error(self, exc: Exception) -> None:
        self.sender.send(stream_error(exc), flags=pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def cancelled(self) -> bool:
        return self.sender.is_cancelled()


def request_parameters(request) -> dict:
    raw = request.parameters()
    return json.loads(raw) if isinstance(raw, str) and raw else dict(raw or {})


class GenerationStep:
    def initialize(self, args: dict) -> None:
        from tokenizers import Tokenizer

        p = parameters(args)
        folder = Path(model_dir(args))
        generator = Generator.from_params(p)
        self.limits = generator.limits
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()  # a prompt over the limit is an error, never silently cut
        self.tokenizer.no_padding()
        model = load_model(folder, p, args)
        labels = {"model": args["model_name"]}
        counters = {k: Counter(f"tritonize_generation_{k}_total", d, labels) for k, d in COUNTERS.items()}
        # What is limited is requests in flight (running + waiting) against the capacity
        # (max_sequences + max_queue): the gauges name exactly that.
        running = Gauge("tritonize_generation_running_sequences", "Sequences in the running batch", labels)
        waiting = Gauge("tritonize_generation_waiting_requests", "Requests waiting for a sequence slot", labels)
        in_flight = Gauge("tritonize_generation_in_flight_requests", "Requests running or waiting (refused at the capacity)", labels)
        self.capacity = Gauge("tritonize_generation_capacity_requests", "Requests in flight accepted at most: max_sequences + max_queue",
                              labels)  # kept: the metric lives as long as its object
        self.capacity.set(self.limits.max_sequences + self.limits.max_queue)

        def gauges(n_running: int, n_waiting: int) -> None:
            running.set(n_running)
            waiting.set(n_waiting)
            in_flight.set(n_running + n_waiting)

        self.engine = Engine(model, TokenBytes(self.tokenizer), self.limits, generator.eos_token_id, counters, gauges)
        self.decoder_only = model.decoder_only
        self.engine.start()

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self.engine.submit(self._job(request, sender))
            except Exception as exc:  # every request gets its final response, or Triton never releases it
                sender.send(stream_error(exc), flags=pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _job(self, request, sender) -> Job:
        params, explicit = parse(request_parameters(request), self.limits)
        text = decode_texts(input_array(request, "TEXT").reshape(1, -1), self.limits.max_prompt_bytes)[0]
        if not text.strip():
            raise InputError("TEXT is empty: send a non-empty prompt")
        prompt = self.tokenizer.encode(text).ids
        params = fit_to_context(params, explicit, len(prompt), self.limits, self.decoder_only)
        return Job(prompt, params, TritonSink(sender, len(prompt)))

    def finalize(self) -> None:
        self.engine.stop()
