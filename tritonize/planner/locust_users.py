"""Locust users that call Triton with tritonclient (gRPC or HTTP), the OpenAI-compatible gateway over
HTTP (`--via openai`), or the FastAPI baseline.

Every call is recorded as a Locust request event: name = pipeline, response time, payload size,
exception. By default users are closed-loop (no wait): the offered load is the number of users. With a
rate (`rate = 100` on the class, or `--rate 100`) a Triton user is open-loop: it sends on a schedule
(Poisson or constant gaps) whether or not earlier requests returned, each request in its own greenlet,
and its latency counts from the scheduled send time, so a slow server cannot slow the arrivals (no
coordinated omission). Clients are closed in `on_stop`, so every load run ends by itself.

Your own locustfile (docs/performance.md, "Your own Locust file")::

    from tritonize.planner.locust_users import TritonGrpcUser, attach_triton_stats

    class Embed(TritonGrpcUser):
        scenario = "embed-mix"  # a scenario name or JSON file; or `--scenario` on Locust's command line

    attach_triton_stats("localhost:8000")  # Triton's queue/compute/batch beside Locust's CSV

Importing this module sets gRPC up for gevent (`grpc.experimental.gevent.init_gevent()`), before any
channel exists; without it Locust's users would run one call at a time.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path

import grpc.experimental.gevent as _grpc_gevent

_grpc_gevent.init_gevent()  # Locust runs on gevent: gRPC must cooperate with it (Locust's docs)

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import numpy as np  # noqa: E402
import tritonclient.grpc  # noqa: E402, F401  (imported before the run's clock starts, not in on_start)
import tritonclient.http  # noqa: E402, F401
from locust import FastHttpUser, User, constant, events, task  # noqa: E402
from locust.user.task import LOCUST_STATE_STOPPING  # noqa: E402

from tritonize.client.types import TritonizeError  # noqa: E402
from tritonize.planner import triton_stats  # noqa: E402
from tritonize.planner.scenarios import Scenario  # noqa: E402

ARRIVALS = ("poisson", "constant")
LATE_S = 0.010  # a send this far behind its schedule counts as late (the sender fell behind)


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    group = parser.add_argument_group("tritonize")
    group.add_argument("--scenario", default=None, help="tritonize scenario: a name (tritonize/planner/scenarios) or a JSON file")
    group.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s offered by all users together (0: closed loop)")
    group.add_argument("--arrival", default="poisson", choices=ARRIVALS, help="open loop: gaps between sends")
    group.add_argument("--triton-http", default=None, help="Triton's HTTP host:port: its statistics are written beside the CSV")


def _option(user, name: str):
    options = getattr(user.environment, "parsed_options", None)
    return getattr(options, name, None) if options is not None else None


_LOADED: dict[str, tuple[Scenario, list[str]]] = {}  # scenario name or file -> (scenario, its text pool), per process


def _load(chosen: str | Scenario) -> tuple[Scenario, list[str]]:
    if isinstance(chosen, Scenario):
        return chosen, chosen.texts()
    if chosen not in _LOADED:
        sc = Scenario.load(chosen)
        _LOADED[chosen] = (sc, sc.texts())
    return _LOADED[chosen]


def scenario(user) -> Scenario:
    """The user's scenario: Locust's `--scenario` if given, else the class attribute `scenario`."""
    chosen = _option(user, "scenario") or getattr(user, "scenario", None)
    if chosen is None:
        raise SystemExit(f"{type(user).__name__}: no scenario; set `scenario = \"embed-mix\"` (a name or JSON file) on the class or pass --scenario")
    return _load(chosen)[0]


@events.init.add_listener
def _preload(environment, **_kw) -> None:
    """Load the scenarios (and their text pools) before the run's clock starts, not in the users' on_start."""
    chosen = getattr(getattr(environment, "parsed_options", None), "scenario", None)
    for name in [chosen] + [getattr(cls, "scenario", None) for cls in (environment.user_classes or [])]:
        if name is not None:
            try:
                _load(name)
            except (OSError, ValueError, TypeError):
                pass  # reported by the user that needs it
    # gevent's loop caches its clock: after a slow import it lags, and Locust's --run-time timer, armed from
    # it, fired up to a second early (a 2 s level sent for 0.8 s here). Bring the clock up to date.
    gevent.get_hub().loop.update_now()


class _OpenLoopCounts:
    """Sends scheduled and sends that left late, summed over this process's users (and the workers')."""

    def __init__(self):
        self.scheduled = self.late = 0
        self.max_lag_ms = 0.0

    def add(self, scheduled: int, late: int, max_lag_ms: float) -> None:
        self.scheduled += scheduled
        self.late += late
        self.max_lag_ms = max(self.max_lag_ms, max_lag_ms)


OPEN_LOOP = _OpenLoopCounts()


@events.report_to_master.add_listener
def _report(client_id, data) -> None:
    data["tritonize_open_loop"] = vars(OPEN_LOOP).copy()
    OPEN_LOOP.__init__()  # type: ignore[misc]


@events.worker_report.add_listener
def _collect(client_id, data) -> None:
    if "tritonize_open_loop" in data:
        OPEN_LOOP.add(**data["tritonize_open_loop"])


@events.quitting.add_listener
def _write_open_loop(environment, **_kw) -> None:
    prefix = getattr(getattr(environment, "parsed_options", None), "csv_prefix", None)
    if prefix and OPEN_LOOP.scheduled and not _is_worker(environment):
        Path(f"{prefix}_open_loop.json").write_text(json.dumps(vars(OPEN_LOOP)))


@events.quitting.add_listener
def _final_stats_csv(environment, **_kw) -> None:
    """Locust rewrites PREFIX_stats.csv once a second while it runs and not again at the end, so its
    last second is missing from it (the HTML report has it): write it once more, with Locust's own
    writer, from the final stats, so that the CSV, the HTML and what `bench` reads are one window."""
    prefix = getattr(getattr(environment, "parsed_options", None), "csv_prefix", None)
    if not prefix or _is_worker(environment) or environment.stats is None:
        return
    import csv

    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    with open(f"{prefix}_stats.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(writer.requests_csv_columns)
        writer._requests_data_rows(rows)


def _is_worker(environment) -> bool:
    from locust.runners import WorkerRunner

    return isinstance(environment.runner, WorkerRunner)


_TRITON: dict = {}  # attach_triton_stats: the URL, and the snapshot taken when the test started


def attach_triton_stats(http_url: str) -> None:
    """Attach Triton's own view of a Locust run (queue, compute, batch sizes per model): written beside
    Locust's CSV as PREFIX_triton.json and PREFIX_triton.csv when the run ends (PREFIX: `--csv`, else
    ./locust). Call it once in a locustfile, or pass `--triton-http HOST:PORT`. `http_url`: Triton's
    HTTP host:port (statistics API)."""
    _TRITON["url"] = http_url


def _triton_url(environment) -> str | None:
    return _TRITON.get("url") or getattr(getattr(environment, "parsed_options", None), "triton_http", None)


@events.test_start.add_listener
def _triton_before(environment, **_kw) -> None:
    if _triton_url(environment) and not _is_worker(environment):
        _TRITON["before"] = triton_stats.snapshot(_triton_url(environment))


@events.test_stop.add_listener
def _triton_after(environment, **_kw) -> None:
    if "before" not in _TRITON or _is_worker(environment):
        return
    window = triton_stats.window(_TRITON.pop("before"), triton_stats.snapshot(_triton_url(environment)))
    prefix = getattr(environment.parsed_options, "csv_prefix", None) or "locust"
    triton_stats.write(window, Path(prefix))


class _Rows:
    """Each user walks the shared text pool from its own offset."""

    _ids = itertools.count()

    def __init__(self, sc: Scenario):
        self.sc, self.pool = sc, next((pool for s, pool in _LOADED.values() if s is sc), None) or sc.texts()
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
    """Calls one Triton pipeline. Class attributes (or Locust's `--scenario/--rate/--arrival`):
    `scenario` (name or JSON file), `rate` (requests/s offered by all users together; 0 = closed loop)
    and `arrival` (poisson | constant)."""

    abstract = True
    wait_time = constant(0)
    protocol = "grpc"
    scenario: str | Scenario | None = None
    rate: float = 0.0
    arrival: str = "poisson"

    def on_start(self) -> None:
        self.sc = scenario(self)
        self.rows = _Rows(self.sc)
        self.rate = float(_option(self, "rate") or self.rate)
        self.arrival = _option(self, "arrival") if _option(self, "rate") else self.arrival
        if self.arrival not in ARRIVALS:
            raise SystemExit(f"arrival must be one of {', '.join(ARRIVALS)}, not {self.arrival!r}")
        if self.protocol == "grpc":
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(self.host)
        else:
            import tritonclient.http as mod

            # open loop: as many connections as requests in flight, else sends queue for a connection
            self.client = mod.InferenceServerClient(self.host, concurrency=256 if self.rate else 1)
        self.mod = mod
        self.outputs = [mod.InferRequestedOutput(o) for o in self.sc.outputs]
        self.sending = gevent.pool.Group()

    @task
    def call(self) -> None:
        if self.rate > 0:
            return self.open_loop()
        self.send(time.perf_counter())

    def open_loop(self) -> None:
        """Send on schedule until the run stops: this user's share of `rate`, each request in its own
        greenlet, its latency counted from the scheduled time. Sends that leave more than LATE_S behind
        schedule are counted (PREFIX_open_loop.json) and keep their scheduled start. Ends when Locust
        asks the user to stop, once the requests already sent have returned."""
        share = self.rate / max(int(_option(self, "num_users") or 1), 1)  # -u counts every process's users
        rng = random.Random(self.sc.seed * 1009 + self.rows.position)
        due = time.perf_counter()
        while self._state != LOCUST_STATE_STOPPING:
            due += rng.expovariate(share) if self.arrival == "poisson" else 1 / share
            lag = time.perf_counter() - due
            if lag < 0:
                gevent.sleep(-lag)
                if self._state == LOCUST_STATE_STOPPING:
                    break
                lag = time.perf_counter() - due
            OPEN_LOOP.add(1, int(lag > LATE_S), max(lag, 0) * 1e3)
            self.sending.spawn(self.send, due)
        # The run's time is up: nothing more is sent, and what was sent may finish (within Locust's
        # --stop-timeout, which then kills the rest: a request not back by then was not achieved).
        self.sending.join()

    def send(self, start: float) -> None:
        """One request of the scenario; latency from `start` (the scheduled time in an open loop)."""
        if self.sc.pipeline == "generate":
            return self.generate(start)
        if self.sc.pipeline == "chat":
            return self.chat(start)
        data = np.array(self.rows.next(), dtype=object).reshape(-1, 1)
        text = self.mod.InferInput("TEXT", list(data.shape), "BYTES")
        text.set_data_from_numpy(data)
        size, error = 0, None
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

    def generate(self, start: float) -> None:
        """One streamed generation. Besides the whole call ('generate', size = tokens) it records
        'generate: time to first token' (ms), 'generate: ms per token' after the first, and
        'generate: tokens/s' (that entry's 'response time' column holds tokens per second)."""
        from tritonize.client.generation import GenerationClient

        prompt = self.rows.next()[0].decode("utf-8", errors="replace")
        first, tokens, error = None, 0, None
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


    def chat(self, start: float) -> None:
        """One question to a chatbot, recorded as 'chat: faq', 'chat: generated' or 'chat: no-match' (one
        entry per call, so Locust's aggregate counts calls); size = answer bytes."""
        from tritonize.client.chat import ChatClient

        if not hasattr(self, "chat_client"):
            self.chat_client = ChatClient(self.host)
        question = self.rows.next()[0].decode("utf-8", errors="replace")
        name, size, error = "chat", 0, None
        try:
            answer = self.chat_client.ask(question, model=self.sc.model, **self.sc.params)
            name, size = "chat: " + ("faq" if answer.matched else answer.source), len(answer.text.encode())
        except Exception as e:
            error = TritonizeError.wrap(e, self.sc.model)
        self.record(name, (time.perf_counter() - start) * 1e3, size, error)

    def on_stop(self) -> None:
        self.sending.kill(block=False)  # open loop: requests still in flight when the run stops
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
        self.sc = scenario(self)
        self.rows = _Rows(self.sc)
        if _option(self, "rate"):
            raise SystemExit("--rate (open loop) is for the Triton gRPC and HTTP users; the FastAPI baseline runs closed-loop")

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
        self.sc = scenario(self)
        self.rows = _Rows(self.sc)
        if _option(self, "rate"):
            raise SystemExit("--rate (open loop) is for the Triton gRPC and HTTP users; --via openai runs closed-loop")
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
