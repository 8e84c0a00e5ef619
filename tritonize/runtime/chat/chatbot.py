"""The served chatbot: a Python-backend model that answers from an FAQ or generates, calling the embedder
ensemble and the generator in-process through BLS (`bls.py`).

`Chatbot` (NAME) sends one response per request: ANSWER, SOURCE (FAQ id, 'generated' or 'no-match'),
SCORE (best cosine), CANDIDATES (JSON list of the top-k {id, score}), FINISH_REASON ('retrieved',
'no-match', or the generator's eos | length | stop). `ChatbotStream` (NAME_stream, decoupled) sends the
same outputs, a generated answer piece by piece (each response's ANSWER is the new piece).

`execute` checks each request on Triton's thread (a bad one is answered at once, naming the field and
the limit) and hands the rest to worker threads, so a long generation never holds up retrieval answers
and concurrent questions reach the embedder together (its dynamic batcher merges them). Both models
answer through the response sender. A locked in-flight count refuses work beyond `max_in_flight`
(UNAVAILABLE) and lets `finalize` wait until every accepted request has its answer: the drain unloads
this model before the embedder and generator it calls (`server/control.py`).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tritonize.contract.chat import Chatbot as ChatbotParams
from tritonize.runtime.chat import bls
from tritonize.runtime.chat.index import Faq, load_index
from tritonize.runtime.chat.prompt import Budget, Prompter
from tritonize.runtime.chat.request import GENERATED, NO_MATCH, ChatRequest, make_request, route
from tritonize.runtime.generation.params import Overloaded, fit_to_context, parse
from tritonize.runtime.text_inputs import decode_texts
from tritonize.runtime.triton import InputError, input_array, model_config, parameters, pb


class InFlight:
    """Requests accepted and not yet answered."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0
        self._cv = threading.Condition()

    def enter(self) -> None:
        with self._cv:
            if self.count >= self.limit:
                raise Overloaded(f"overloaded: {self.count} chat requests in flight (the limit is {self.limit}); retry later")
            self.count += 1

    def leave(self) -> None:
        with self._cv:
            self.count -= 1
            self._cv.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self.count == 0, timeout=timeout_s)


def error_response(exc: Exception):
    u = pb()
    if isinstance(exc, bls.SubRequestError):
        code = exc.code
    elif isinstance(exc, InputError):
        code = u.TritonError.INVALID_ARG
    elif isinstance(exc, Overloaded):
        code = u.TritonError.UNAVAILABLE
    else:
        code = u.TritonError.INTERNAL
    return u.InferenceResponse(output_tensors=[], error=u.TritonError(str(exc), code))


def _optional(request, name: str):
    tensor = pb().get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)
    if value.size != 1:
        raise InputError(f"{name} must hold one value, got {value.size}")
    return value[0]


def _request_parameters(request) -> dict:
    raw = request.parameters()
    return json.loads(raw) if isinstance(raw, str) and raw else dict(raw or {})


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode("utf-8")], dtype=np.object_)


class Chatbot:
    streaming = False

    def initialize(self, args: dict) -> None:
        from tokenizers import Tokenizer

        decoupled = bool(model_config(args).get("model_transaction_policy", {}).get("decoupled", False))
        if decoupled != self.streaming:
            raise ValueError(f"{args['model_name']}: {type(self).__name__} needs decoupled={self.streaming} in its config")
        c = ChatbotParams.from_params(parameters(args))
        # NAME_stream reads the files that the converter stored once, in NAME's folder.
        folder = Path(args["model_repository"]).parent / c.data_model / "1"
        self.embedder, self.generator = c.embedder, c.generator
        self.settings, self.limits = c.settings, c.limits
        self.faq = Faq.load(folder)
        self.index = load_index(folder, c.index, self.faq, c.faiss_ef_search)
        tokenizer = Tokenizer.from_file(str(folder / "generator_tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        budget = Budget(self.limits.max_context, self.limits.default_max_new_tokens, c.generator_family == "decoder")
        self.prompter = Prompter((folder / "prompt.txt").read_text(encoding="utf-8"), lambda t: len(tokenizer.encode(t).ids), budget)
        self.pool = ThreadPoolExecutor(c.workers, thread_name_prefix=f"{args['model_name']}-worker")
        self.in_flight = InFlight(c.max_in_flight)

    # -- Triton's thread ---------------------------------------------------------------------------
    def execute(self, requests):
        final = pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                chat = self._read(request)
                self.in_flight.enter()
            except Exception as exc:  # every request gets its final response, or Triton never releases it
                sender.send(error_response(exc), flags=final)
                continue
            self.pool.submit(self._run, chat, sender)
        return None

    def _read(self, request) -> ChatRequest:
        question = decode_texts(input_array(request, "TEXT").reshape(1, 1), self.settings.max_question_bytes)[0]
        mode = _optional(request, "MODE")
        threshold = _optional(request, "THRESHOLD")
        top_k = _optional(request, "TOP_K")
        history = _optional(request, "HISTORY")
        if history is not None:
            history = decode_texts(np.array([[history]], dtype=np.object_), self.settings.max_history_bytes, "HISTORY")[0]
        return make_request(
            question,
            None if mode is None else (mode.decode("utf-8", "replace") if isinstance(mode, bytes) else str(mode)),
            None if threshold is None else float(threshold),
            None if top_k is None else int(top_k),
            _request_parameters(request),
            self.settings,
            self.limits,
            history,
        )

    # -- worker threads ----------------------------------------------------------------------------
    def _run(self, chat: ChatRequest, sender) -> None:
        try:
            self._answer(chat, sender)
        except Exception as exc:
            try:
                sender.send(error_response(exc), flags=pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception:  # already final (an error after the last piece): nothing more to tell
                pass
        finally:
            self.in_flight.leave()

    def _answer(self, chat: ChatRequest, sender) -> None:
        rows, scores = self.index.search(bls.embed(self.embedder, chat.question), chat.top_k)
        decision = route(chat, rows, scores)
        common = {
            "SCORE": np.array([scores[0] if scores else 0.0], dtype=np.float32),
            "CANDIDATES": _bytes(json.dumps([{"id": self.faq.ids[r], "score": s} for r, s in zip(rows, scores)])),
        }
        if decision.kind == "faq":
            return self._send(sender, common, self.faq.answers[decision.row], self.faq.ids[decision.row], "retrieved")
        if decision.kind == "no-match":
            return self._send(sender, common, "", NO_MATCH, "no-match")
        entries = [(self.faq.questions[r], self.faq.answers[r]) for r in decision.context]
        prompt, _, tokens = self.prompter.build(chat.question, entries, chat.max_new_tokens, chat.history)
        self._check_prompt(prompt, tokens, chat)
        pieces = bls.generate(self.generator, prompt, chat.generation, self.streaming, sender.is_cancelled)
        if not self.streaming:  # stream=false: the generator sends the whole text in one response
            parts = list(pieces)
            text, reason = "".join(t for t, _ in parts), (parts[-1][1] if parts else "")
            return self._send(sender, common, text, GENERATED, reason)
        cancelled = False
        for piece, reason in pieces:
            # Triton 2.51's BLS cannot cancel the sub-request: read it to the end, stop sending.
            cancelled = cancelled or sender.is_cancelled()
            if not cancelled:
                self._send(sender, common, piece, GENERATED, reason, final=bool(reason))
        if cancelled:
            sender.send(flags=pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _check_prompt(self, prompt: str, tokens: int, chat: ChatRequest) -> None:
        """The generator's own prompt checks, here: Triton 2.51's BLS hands a callee's error back without its
        code, so a prompt the generator would refuse is refused as INVALID_ARG before the call."""
        size = len(prompt.encode())
        if size > self.limits.max_prompt_bytes:
            raise InputError(f"the generator's prompt is {size:,} bytes; the limit is {self.limits.max_prompt_bytes:,} bytes")
        params, explicit = parse(chat.generation, self.limits)
        fit_to_context(params, explicit, tokens, self.limits, self.prompter.budget.decoder_only)

    def _send(self, sender, common: dict, answer: str, source: str, reason: str, final: bool = True) -> None:
        u = pb()
        outputs = {**common, "ANSWER": _bytes(answer), "SOURCE": _bytes(source), "FINISH_REASON": _bytes(reason)}
        response = u.InferenceResponse(output_tensors=[u.Tensor(k, v) for k, v in outputs.items()])
        sender.send(response, flags=u.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0)

    def finalize(self) -> None:
        self.in_flight.wait_idle(timeout_s=60.0)
        self.pool.shutdown(wait=True)


class ChatbotStream(Chatbot):
    streaming = True
