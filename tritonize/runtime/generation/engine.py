"""The generation engine: one background thread runs every sequence of a served model together.

Each loop iteration is one engine step:
1. drop cancelled requests (queued or running) and free their slots;
2. admit queued requests into free slots (at most `max_sequences` run at once) and prefill them:
   where the model batches prompts (`prefill_many`), prompts of similar length share a forward of at
   most `max_prefill_tokens` (see `prefill.py`), else one forward per prompt; each prompt gets its
   first token right away;
3. one decode forward over the newest token of every running sequence (the KV cache holds the rest);
4. stream each sequence's new text; finished sequences leave and queued ones take their place at the
   next step (continuous batching: nobody waits for the whole batch to end).

The engine knows nothing of Triton: each request brings a `Sink` that delivers pieces, errors and
cancellation; `tritonize.runtime.generation.step` implements it with the decoupled response sender.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tritonize.runtime.generation.cache import CacheSlot
from tritonize.runtime.generation.params import Limits, Overloaded, SamplingParams
from tritonize.runtime.generation.prefill import plan_prefill
from tritonize.runtime.generation.sampling import next_token
from tritonize.runtime.generation.text import TextStream, TokenBytes

COUNTERS = {
    "steps": "Decode forwards (one per group of running sequences per engine step)",
    "step_rows": "Sequences summed over decode forwards (rows / steps = mean batch size)",
    "prefills": "Prompts prefilled (one per admitted request; several may share a forward)",
    "prefill_forwards": "Prefill forwards (prefills / prefill_forwards = mean prompts per forward)",
    "joined_running": "Requests admitted while other sequences were mid-generation",
    "tokens": "Tokens generated",
    "finished": "Sequences that ended normally (eos, length or stop string)",
    "cancelled": "Sequences dropped because the caller cancelled or went away",
    "rejected_overloaded": "Requests refused because every slot and the whole queue were busy",
    "failed": "Sequences ended by an internal error",
    "prefill_seconds": "Time spent in prompt forwards",
    "decode_seconds": "Time spent in decode forwards",
    "send_seconds": "Time spent handing responses to Triton",
}


class Sink(Protocol):
    def piece(self, text: str, token_ids: list[int], finish_reason: str | None) -> None: ...
    def error(self, exc: Exception) -> None: ...
    def cancelled(self) -> bool: ...


class Tally:
    """A plain counter (the Triton step swaps in Prometheus counters)."""

    def __init__(self) -> None:
        self.value = 0.0

    def add(self, n: float) -> None:
        self.value += n


@dataclass
class Job:
    prompt: list[int]
    params: SamplingParams
    sink: Sink
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class Sequence:
    id: int
    job: Job
    text: TextStream
    rng: np.random.Generator
    seen: list[int]  # prompt + generated ids (for the repetition penalty)
    slot: CacheSlot | None = None
    generated: list[int] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)  # ids not yet delivered (non-streaming callers)
    collected: list[str] = field(default_factory=list)  # pieces kept for non-streaming callers


class Engine:
    def __init__(self, model, token_bytes: TokenBytes, limits: Limits, eos_token_id: int | None, counters: dict | None = None,
                 on_gauges=None):
        self.model = model
        self.token_bytes = token_bytes
        self.limits = limits
        self.eos = eos_token_id
        self.counters = counters or {k: Tally() for k in COUNTERS}
        self.on_gauges = on_gauges or (lambda running, waiting: None)
        self.queue: collections.deque[Job] = collections.deque()
        self.running: dict[int, Sequence] = {}
        self.ids = itertools.count()
        self.wake = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="tritonize-generation", daemon=True)

    # -- called from Triton's execute thread ------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.wake:
            # The limit is on requests in flight, running and waiting together: the engine thread admits
            # from the waiting line later, so during a burst more than max_queue may wait while slots
            # are still free (running is 0 while it arrives). Say so, not "queued" against max_queue.
            capacity = self.limits.max_sequences + self.limits.max_queue
            running, waiting = len(self.running), len(self.queue)
            if running + waiting >= capacity:
                self.counters["rejected_overloaded"].add(1)
                raise Overloaded(
                    f"overloaded: {running + waiting} requests in flight ({running} running, {waiting} waiting for a sequence "
                    f"slot); the capacity is {capacity} (max_sequences={self.limits.max_sequences} + "
                    f"max_queue={self.limits.max_queue}); retry later"
                )
            self.queue.append(job)
            self.wake.notify()

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout=10)

    # -- the engine thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.stopping and not self.queue and not self.running:
                    self.wake.wait()
                if self.stopping:
                    break
            try:
                self.step()
            except Exception as exc:  # never let one failure end the thread: fail what was running
                self._fail_all(exc)
        self._fail_all(RuntimeError("the model is being unloaded"))

    def step(self) -> None:
        self._drop_cancelled()
        self._prefill(self._admit())
        slots = {i: s.slot for i, s in self.running.items()}
        for members in self.model.groups(slots):
            tokens = [self.running[m].generated[-1] for m in members]
            started = time.perf_counter()
            try:
                logits = self.model.decode(members, slots, tokens)
            except Exception as exc:  # e.g. GPU out of memory: this forward's sequences fail; the queue is served next
                self.model.forget()
                for m in members:
                    self._end(self.running[m], exc)
                continue
            self.counters["decode_seconds"].add(time.perf_counter() - started)
            self.counters["steps"].add(1)
            self.counters["step_rows"].add(len(members))
            for row, m in enumerate(members):
                self._advance(self.running[m], logits[row])
        if not self.running:
            self.model.forget()  # the last batch's cache is no longer needed: free its memory now
        self.on_gauges(len(self.running), len(self.queue))

    def _admit(self) -> list[Sequence]:
        admitted = []
        mid_generation = bool(self.running)  # were others running before this round of admissions?
        with self.wake:
            while self.queue and len(self.running) < self.limits.max_sequences:
                job = self.queue.popleft()
                seq = Sequence(
                    next(self.ids), job, TextStream(self.token_bytes, job.params.stop),
                    np.random.default_rng(job.params.seed), list(job.prompt),
                )
                if mid_generation:
                    self.counters["joined_running"].add(1)
                self.running[seq.id] = seq
                admitted.append(seq)
        return admitted

    def _prefill(self, admitted: list[Sequence]) -> None:
        """Prompt forwards: grouped by length within the token budget where the model batches prompts, else one by one."""
        many = getattr(self.model, "prefill_many", None)
        if many and len(admitted) > 1:
            overhead = getattr(self.model, "prefill_overhead_tokens", None)
            groups = plan_prefill([len(seq.job.prompt) for seq in admitted], self.limits.max_prefill_tokens, overhead)
            batches = [[admitted[i] for i in group] for group in groups]
        else:
            batches = [[seq] for seq in admitted]
        for batch in batches:
            started = time.perf_counter()
            try:
                if len(batch) > 1:
                    results = many([seq.job.prompt for seq in batch])
                else:
                    results = [self.model.prefill(batch[0].job.prompt)]
            except Exception as exc:  # fails these prompts only; the running batch goes on
                for seq in batch:
                    self._end(seq, exc)
                continue
            self.counters["prefill_seconds"].add(time.perf_counter() - started)
            self.counters["prefills"].add(len(batch))
            self.counters["prefill_forwards"].add(1)
            for seq, (logits, slot) in zip(batch, results):
                seq.slot = slot
                self._advance(seq, logits)

    def _advance(self, seq: Sequence, logits: np.ndarray) -> None:
        """Choose the next token, deliver the text it completes, end the sequence if it is done."""
        p = seq.job.params
        token = next_token(logits, np.asarray(seq.seen), p, seq.rng)
        self.counters["tokens"].add(1)
        seq.generated.append(token)
        seq.seen.append(token)
        seq.unsent.append(token)
        reason, piece = None, ""
        if token == self.eos:
            reason = "eos"
        else:
            piece = seq.text.push(token)
            if seq.text.stopped:
                reason = "stop"
            elif len(seq.generated) >= p.max_new_tokens:
                reason = "length"
        if p.stream:  # one response per token, even when its text is held back ('')
            self._send(seq, piece, None)
        else:
            seq.collected.append(piece)
        if reason is not None:
            self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: str) -> None:
        """The final response: the held-back tail (stream) or the whole text (non-streaming)."""
        self.running.pop(seq.id, None)
        tail = seq.text.finish()
        self._send(seq, tail if seq.job.params.stream else "".join(seq.collected) + tail, reason)
        self.counters["finished"].add(1)

    def _send(self, seq: Sequence, text: str, reason: str | None) -> None:
        ids, seq.unsent = seq.unsent, []
        started = time.perf_counter()
        try:
            seq.job.sink.piece(text, ids, reason)
        except Exception:  # the caller is gone: free the slot
            if self.running.pop(seq.id, None) is not None:
                self.counters["cancelled"].add(1)
        self.counters["send_seconds"].add(time.perf_counter() - started)

    def _end(self, seq: Sequence, error: Exception) -> None:
        self.running.pop(seq.id, None)
        self.counters["failed"].add(1)
        self._safe(seq.job.sink.error, error)

    def _drop_cancelled(self) -> None:
        """Free the slots (and queue places) of requests whose caller cancelled or went away."""
        with self.wake:
            gone = [j for j in self.queue if self._is_cancelled(j.sink)]
            if gone:
                self.queue = collections.deque(j for j in self.queue if all(j is not g for g in gone))
        for seq in [s for s in self.running.values() if self._is_cancelled(s.job.sink)]:
            self.running.pop(seq.id, None)
            gone.append(seq.job)
        for job in gone:  # Triton releases a request only after its final response
            self._safe(job.sink.piece, "", [], "cancelled")
        self.counters["cancelled"].add(len(gone))

    def _fail_all(self, exc: Exception) -> None:
        self.model.forget()
        with self.wake:
            jobs, self.queue = list(self.queue), collections.deque()
        for seq in list(self.running.values()):
            self._end(seq, exc)
        for job in jobs:
            self._safe(job.sink.error, exc)

    @staticmethod
    def _is_cancelled(sink: Sink) -> bool:
        try:
            return sink.cancelled()
        except Exception:
            return True

    @staticmethod
    def _safe(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            pass  # the caller went away; nothing left to tell it
