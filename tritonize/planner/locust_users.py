"""Locust users that call Triton with tritonclient (gRPC or HTTP), the OpenAI-compatible gateway over
HTTP (`--via openai`), or the FastAPI baseline.

Every call is recorded as a Locust request event: name = pipeline, response time, payload size,
exception. Users are closed-loop (no wait): the offered load is the number of users. Clients are
closed in `on_stop`, so every load run ends by itself (an open gRPC channel kept Locust from exiting).
"""

from __future__ import annotations

import itertools
import json
import os
import time

import numpy as np
from locust import FastHttpUser, User, constant, task

from tritonize.planner.scenarios import SCENARIO_ENV, Scenario
from tritonize.client.types import TritonizeError




def scenario() -> Scenario:
    return Scenario.load(os.environ[SCENARIO_ENV])


class _Rows:
    """Each user walks the shared text pool from its own offset."""

    _ids = itertools.count()

    def __init__(self, sc: Scenario):
        self.sc, self.pool = sc, sc.texts()
        self.position = next(self._ids) * 7919
        self.sent = 0

    def bad(self) -> bool:
        """Whether the request about to be built is one of the scenario's deliberately bad ones."""
        return bool(self.sc.bad_every) and (self.sent + 1) % self.sc.bad_every == 0

    def next(self) -> list[bytes]:
        if self.bad():
            self.sent += 1
            return [b"not utf-8 \xff\xfe"] * self.sc.rows_per_request
        self.sent += 1
        rows = []
        for _ in range(self.sc.rows_per_request):
            rows.append(self.pool[self.position % len(self.pool)].encode())
            self.position += 1
        return rows


class TritonUser(User):
    abstract = True
    wait_time = constant(0)
    protocol = "grpc"

    def on_start(self) -> None:
        self.sc = scenario()
        self.rows = _Rows(self.sc)
        if self.protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
        self.mod = mod
        self.client = mod.InferenceServerClient(self.host)
        self.outputs = [mod.InferRequestedOutput(o) for o in self.sc.outputs]

    @task
    def call(self) -> None:
        if self.sc.pipeline == "generate":
            return self.generate()
        if self.sc.pipeline == "chat":
            return self.chat()
        data = np.array(self.rows.next(), dtype=object).reshape(-1, 1)
        text = self.mod.InferInput("TEXT", list(data.shape), "BYTES")
        text.set_data_from_numpy(data)
        start, size, error = time.perf_counter(), 0, None
        try:
            result = self.client.infer(self.sc.model, [text], outputs=self.outputs)
            size = sum(result.as_numpy(o).nbytes for o in self.sc.outputs)
        except Exception as e:  # recorded as a failure (with Triton's message), the user goes on
            error = TritonizeError.wrap(e, self.sc.model)
        self.record(self.sc.pipeline, (time.perf_counter() - start) * 1e3, size, error)

    def record(self, name: str, value: float, size: int = 0, error: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=self.protocol, name=name, response_time=value, response_length=size, exception=error, context={},
        )

    def generate(self) -> None:
        """One streamed generation. Besides the whole call ('generate', size = tokens) it records
        'generate: time to first token' (ms), 'generate: ms per token' after the first, and
        'generate: tokens/s' (that entry's 'response time' column holds tokens per second)."""
        from tritonize.client.generation import GenerationClient

        prompt = self.rows.next()[0].decode("utf-8", errors="replace")
        start, first, tokens, error = time.perf_counter(), None, 0, None
        try:
            for chunk in GenerationClient(self.host).stream_chunks(prompt, model=self.sc.model, **self.sc.params):
                if chunk.token_ids and first is None:
                    first = time.perf_counter()
                tokens += len(chunk.token_ids)
        except Exception as e:
            error = TritonizeError.wrap(e, self.sc.model)
        total = time.perf_counter() - start
        self.record("generate", total * 1e3, tokens, error)
        if error is None and first is not None:
            self.record("generate: time to first token", (first - start) * 1e3)
            if tokens > 1:
                self.record("generate: ms per token", (time.perf_counter() - first) * 1e3 / (tokens - 1))
            self.record("generate: tokens/s", tokens / total)


    def chat(self) -> None:
        """One question to a chatbot, recorded as 'chat: faq', 'chat: generated' or 'chat: no-match' (one
        entry per call, so Locust's aggregate counts calls); size = answer bytes."""
        from tritonize.client.chat import ChatClient

        if not hasattr(self, "chat_client"):
            self.chat_client = ChatClient(self.host)
        question = self.rows.next()[0].decode("utf-8", errors="replace")
        start, name, size, error = time.perf_counter(), "chat", 0, None
        try:
            answer = self.chat_client.ask(question, model=self.sc.model, **self.sc.params)
            name, size = "chat: " + ("faq" if answer.matched else answer.source), len(answer.text.encode())
        except Exception as e:
            error = TritonizeError.wrap(e, self.sc.model)
        self.record(name, (time.perf_counter() - start) * 1e3, size, error)

    def on_stop(self) -> None:
        self.client.close()
        if hasattr(self, "chat_client"):
            self.chat_client.close()


class TritonGrpcUser(TritonUser):
    abstract = True
    protocol = "grpc"


class TritonHttpUser(TritonUser):
    abstract = True
    protocol = "http"


class FastApiUser(FastHttpUser):
    """The baseline many teams run: FastAPI + PyTorch (tritonize/planner/fastapi_baseline.py)."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.sc = scenario()
        self.rows = _Rows(self.sc)

    @task
    def call(self) -> None:
        bad = self.rows.bad()
        rows = self.rows.next()
        body = {"texts": None} if bad else {"texts": [r.decode() for r in rows]}  # JSON cannot carry bad UTF-8
        self.client.post(f"/{self.sc.pipeline}", json=body, name=self.sc.pipeline)


class OpenAIUser(FastHttpUser):
    """Calls the gateway as an OpenAI client would: POST /v1/embeddings, or a streamed /v1/completions
    recorded under the same names as the gRPC user's generation (TTFT, ms per token, tokens/s)."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.sc = scenario()
        self.rows = _Rows(self.sc)
        if self.sc.pipeline not in ("embed", "generate"):
            raise SystemExit(f"--via openai serves embed and generate scenarios, not {self.sc.pipeline!r}")
        key = os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.session = None

    def on_stop(self) -> None:
        if self.session is not None:
            self.session.close()

    @task
    def call(self) -> None:
        if self.sc.pipeline == "generate":
            return self.generate()
        bad = self.rows.bad()
        rows = self.rows.next()
        texts = [r.decode("utf-8", errors="strict") for r in rows] if not bad else [[1, 2]]  # a refused token array
        body = {"model": self.sc.model, "input": texts, "encoding_format": "base64"}
        self.client.post("/v1/embeddings", json=body, headers=self.headers, name=self.sc.pipeline)

    def record(self, name: str, value: float, size: int = 0, error: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="openai", name=name, response_time=value, response_length=size, exception=error, context={},
        )

    def generate(self) -> None:
        # requests yields each HTTP chunk (one SSE event) as it arrives; FastHttpUser's reader waits for
        # a full block, which would hide the time to first token.
        import requests

        if self.session is None:
            self.session = requests.Session()
        prompt = self.rows.next()[0].decode("utf-8", errors="replace")
        params = {"max_tokens" if k == "max_new_tokens" else k: v for k, v in self.sc.params.items()}
        body = {"model": self.sc.model, "prompt": prompt, "stream": True, "stream_options": {"include_usage": True}, **params}
        start, first, tokens, error = time.perf_counter(), None, 0, None
        try:
            with self.session.post(f"{self.host}/v1/completions", json=body, headers=self.headers, stream=True, timeout=300) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                for line in r.iter_lines():
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise RuntimeError(event["error"]["message"])
                    if event["choices"] and event["choices"][0]["text"] and first is None:
                        first = time.perf_counter()
                    if event.get("usage"):
                        tokens = event["usage"]["completion_tokens"]
        except Exception as e:
            error = e
        total = time.perf_counter() - start
        self.record("generate", total * 1e3, tokens, error)
        if error is None and first is not None:
            self.record("generate: time to first token", (first - start) * 1e3)
            if tokens > 1:
                self.record("generate: ms per token", (time.perf_counter() - first) * 1e3 / (tokens - 1))
            self.record("generate: tokens/s", tokens / total)
