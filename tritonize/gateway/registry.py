"""What the Triton server serves, as the gateway sees it: each pipeline's kind and the settings its config
carries, and whether the server is ready.

A pipeline is a model whose config has a `task` parameter (the converters write it on every ensemble
and generator; steps such as `NAME_tokenizer` have none). Names come from the statistics API, which
Triton does not restrict (the repository index is behind the admin key). Configs are read once per model;
an unknown name triggers at most one refresh a second, so a flood of bad names cannot flood Triton.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from tritonize.client import AsyncClient, TritonizeError
from tritonize.families import served_kinds
from tritonize.gateway.errors import ApiError, not_found, not_ready


@dataclass(frozen=True)
class Pipeline:
    name: str
    kind: str  # the config's `task` (one of tritonize.families' tasks)
    params: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    @property
    def chat_template(self) -> str | None:
        return self.params.get("chat_template") or None

    @property
    def max_context(self) -> int | None:
        value = self.params.get("max_context", "")
        return int(value) if value.isdigit() else None

    def json_param(self, key: str) -> dict:
        return json.loads(self.params.get(key) or "{}")

    @classmethod
    def from_config(cls, config: dict) -> "Pipeline | None":
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if not params.get("task"):
            return None
        return cls(config["name"], params["task"], params, tuple(o["name"] for o in config.get("output", [])))


class Registry:
    """Pipelines by name, read lazily from the server; and the server's readiness, polled."""

    def __init__(self, client: AsyncClient, poll_s: float = 1.0):
        self.client, self.poll_s = client, poll_s
        self.pipelines: dict[str, Pipeline] = {}
        self._seen: set[str] = set()  # every model name whose config was read (steps included)
        self._last_refresh = 0.0
        self._lock = asyncio.Lock()
        self.ready = False
        self._poller: asyncio.Task | None = None

    # -- readiness --------------------------------------------------------------------------------
    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            self.ready = await self.client.is_ready()
            await asyncio.sleep(self.poll_s)

    async def ensure_ready(self) -> None:
        """Raise 503 unless the server is ready; a stale 'not ready' is checked again at once."""
        if not self.ready:
            self.ready = await self.client.is_ready()
            if not self.ready:
                raise not_ready()

    # -- pipelines --------------------------------------------------------------------------------
    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._last_refresh < 1.0:
                return
            try:
                names = await self.client.served_models()
            except TritonizeError as e:
                raise not_ready(f"cannot list the server's models: {e.message}") from None
            for name in set(names) - self._seen:
                try:
                    pipeline = Pipeline.from_config(await self.client.model_config(name))
                except TritonizeError:
                    continue  # unloaded meanwhile; looked at again next refresh
                self._seen.add(name)
                if pipeline:
                    self.pipelines[name] = pipeline
            for gone in set(self.pipelines) - set(names):
                del self.pipelines[gone]
                self._seen.discard(gone)
            self._last_refresh = time.monotonic()

    async def all(self) -> list[Pipeline]:
        await self.refresh()
        return sorted(self.pipelines.values(), key=lambda p: p.name)

    async def get(self, name: str, endpoint: str) -> Pipeline:
        """The pipeline named by a request's `model`: 404 if unknown, 400 if it is not of a kind the endpoint serves
        (the families say which)."""
        kinds = served_kinds(endpoint)
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            await self.refresh()
            pipeline = self.pipelines.get(name)
        if pipeline is None:
            raise not_found(name)
        if pipeline.kind not in kinds:
            raise ApiError(400, f"'{name}' is a {pipeline.kind} model; {endpoint} serves {' or '.join(kinds)} models",
                           param="model", code="wrong_model_kind")
        return pipeline
