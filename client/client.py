"""`Client` and `AsyncClient`: classify, embed and rerank (client/rerank.py) through a tritonize pipeline, over gRPC or HTTP.

Both share one flow: texts -> chunks of at most the pipeline's max_batch_size rows -> one TEXT
tensor per chunk -> results stitched back in order. Only the transport call differs. A `Client` may be
shared by the threads of a pool (HTTP: one connection per thread, see pool.py); every failure is a
`TritonizeError` with its status (errors.py).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from tritonize.client.errors import TRANSPORT_ERRORS, calling, invalid, utf8
from tritonize.client.pool import ClientPerThread
from tritonize.client.rerank import AsyncReranking, Reranking
from tritonize.client.types import ModelInfo, Prediction
from tritonize.client.closing import AsyncClosing, Closing

PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
OUTPUTS = {"embedding": ["EMBEDDING"], "classification": ["LOGITS", "PROBABILITIES", "LABEL"]}


def _module(protocol: str, aio: bool):
    if protocol == "grpc":
        import tritonclient.grpc as sync_mod
        import tritonclient.grpc.aio as aio_mod
    elif protocol == "http":
        import tritonclient.http as sync_mod
        import tritonclient.http.aio as aio_mod
    else:
        raise invalid("protocol", f"must be one of {PROTOCOLS}, not {protocol!r}")
    return aio_mod if aio else sync_mod, sync_mod


def as_rows(texts: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    items = [texts] if isinstance(texts, (str, bytes)) else list(texts)
    return [utf8(t, f"texts[{i}]") for i, t in enumerate(items)]


def chunks(rows: list[bytes], size: int) -> list[list[bytes]]:
    size = size or len(rows)
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def build_request(mod, rows: list[bytes], outputs: Sequence[str]):
    data = np.array(rows, dtype=object).reshape(-1, 1)
    text = mod.InferInput("TEXT", list(data.shape), "BYTES")
    text.set_data_from_numpy(data)
    return [text], [mod.InferRequestedOutput(o) for o in outputs]


def embed_parameters(prompt_name: str | None, dimensions: int | None, normalize: bool | None, truncate: bool) -> dict:
    """Client.embed's options as request parameters, under the same names; only those set travel."""
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise invalid("dimensions", f"must be a positive int, not {dimensions!r}")
    options = {"prompt_name": prompt_name, "dimensions": dimensions, "normalize": normalize, "truncate": None if truncate else False}
    return {k: v for k, v in options.items() if v is not None}


def config_dict(raw) -> dict:
    return raw.get("config", raw)  # gRPC (as_json) wraps the config, HTTP does not


def predictions(parts: dict[str, np.ndarray], labels: list[str]) -> list[Prediction]:
    out = []
    for logits, probs, label in zip(parts["LOGITS"], parts["PROBABILITIES"], parts["LABEL"][:, 0]):
        name = label.decode() if isinstance(label, bytes) else str(label)
        out.append(Prediction(name, float(probs[labels.index(name)]), dict(zip(labels, map(float, probs))), logits))
    return out


def empty(info: ModelInfo, name: str) -> np.ndarray:
    return np.zeros((0, *info.output_dims.get(name, [])), dtype=np.float32)


class _Base:
    def __init__(self, url: str | None, protocol: str, timeout_s: float, headers: dict | None, aio: bool):
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.timeout_s = timeout_s
        self.headers = headers
        self._mod, self._sync_mod = _module(protocol, aio)
        kwargs = {"network_timeout": timeout_s, "connection_timeout": timeout_s} if protocol == "http" and not aio else {}
        self._clients = ClientPerThread(lambda: self._mod.InferenceServerClient(self.url, **kwargs),
                                        per_thread=protocol == "http" and not aio)
        self._info: dict[str, ModelInfo] = {}

    @property
    def _client(self):
        return self._clients.get()

    def _infer_kwargs(self) -> dict:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def _config_kwargs(self) -> dict:
        return {"as_json": True} if self.protocol == "grpc" else {}


class Client(_Base, Reranking, Closing):
    """Blocking client: `Client("127.0.0.1:8001").embed(["hello"], model="all-minilm-l6-v2")`."""

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout_s: float = 60.0, headers: dict | None = None):
        super().__init__(url, protocol, timeout_s, headers, aio=False)

    def model_info(self, model: str) -> ModelInfo:
        if model not in self._info:
            with calling(model, self.url):
                raw = self._client.get_model_config(model, headers=self.headers, **self._config_kwargs())
            self._info[model] = ModelInfo.from_config(config_dict(raw))
        return self._info[model]

    def infer(self, model: str, texts, outputs: Sequence[str], parameters: dict | None = None) -> dict[str, np.ndarray]:
        """Raw pipeline outputs for any number of texts (sent in chunks the pipeline accepts); `parameters`:
        Triton request parameters for every chunk."""
        info = self.model_info(model)
        parts: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
        for rows in chunks(as_rows(texts), info.max_batch_size):
            inputs, requested = build_request(self._sync_mod, rows, outputs)
            with calling(model, self.url):
                result = self._client.infer(model, inputs, outputs=requested, headers=self.headers, parameters=parameters or None,
                                            **self._infer_kwargs())
            for o in outputs:
                parts[o].append(result.as_numpy(o))
        return {o: np.concatenate(v) if v else empty(info, o) for o, v in parts.items()}

    def embed(self, texts, *, model: str, prompt_name: str | None = None, dimensions: int | None = None, normalize: bool | None = None,
              truncate: bool = True) -> np.ndarray:
        """Sentence embeddings, one row per text, as the checkpoint defines them (L2-normalised where it
        normalises). `prompt_name`: one of the checkpoint's prompts instead of its default; `dimensions`:
        the first N (Matryoshka), re-normalised; `normalize`: False for the raw pooled vector; `truncate`:
        False refuses a text over the token limit instead of cutting it."""
        options = embed_parameters(prompt_name, dimensions, normalize, truncate)
        return self.infer(model, texts, OUTPUTS["embedding"], options)["EMBEDDING"]

    def classify(self, texts, *, model: str) -> list[Prediction]:
        info = self.model_info(model)
        return predictions(self.infer(model, texts, OUTPUTS["classification"]), info.labels)

    def is_ready(self, model: str | None = None) -> bool:
        try:
            return self._client.is_model_ready(model) if model else self._client.is_server_ready()
        except TRANSPORT_ERRORS:
            return False

    def close(self) -> None:
        self._clients.close_all()


class AsyncClient(_Base, AsyncReranking, AsyncClosing):
    """asyncio client with the same methods as `Client`, awaited."""

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout_s: float = 60.0, headers: dict | None = None):
        super().__init__(url, protocol, timeout_s, headers, aio=True)

    async def model_info(self, model: str) -> ModelInfo:
        if model not in self._info:
            with calling(model, self.url):
                raw = await self._client.get_model_config(model, headers=self.headers, **self._config_kwargs())
            self._info[model] = ModelInfo.from_config(config_dict(raw))
        return self._info[model]

    async def infer(self, model: str, texts, outputs: Sequence[str], parameters: dict | None = None) -> dict[str, np.ndarray]:
        info = await self.model_info(model)
        parts: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
        for rows in chunks(as_rows(texts), info.max_batch_size):
            inputs, requested = build_request(self._sync_mod, rows, outputs)
            with calling(model, self.url):
                result = await self._client.infer(model, inputs, outputs=requested, headers=self.headers, parameters=parameters or None,
                                                  **self._infer_kwargs())
            for o in outputs:
                parts[o].append(result.as_numpy(o))
        return {o: np.concatenate(v) if v else empty(info, o) for o, v in parts.items()}

    async def embed(self, texts, *, model: str, prompt_name: str | None = None, dimensions: int | None = None,
                    normalize: bool | None = None, truncate: bool = True) -> np.ndarray:
        options = embed_parameters(prompt_name, dimensions, normalize, truncate)
        return (await self.infer(model, texts, OUTPUTS["embedding"], options))["EMBEDDING"]

    async def classify(self, texts, *, model: str) -> list[Prediction]:
        info = await self.model_info(model)
        return predictions(await self.infer(model, texts, OUTPUTS["classification"]), info.labels)

    async def is_ready(self, model: str | None = None) -> bool:
        try:
            return await (self._client.is_model_ready(model) if model else self._client.is_server_ready())
        except TRANSPORT_ERRORS:
            return False

    async def served_models(self) -> list[str]:
        """Names of the models the server has loaded (from the statistics API, which is not restricted)."""
        with calling(None, self.url):
            stats = await self._client.get_inference_statistics(headers=self.headers, **self._config_kwargs())
        return sorted({s["name"] for s in stats.get("model_stats", [])})

    async def model_config(self, model: str) -> dict:
        """The model's config as a dict (parameters, inputs, outputs), fetched anew."""
        with calling(model, self.url):
            raw = await self._client.get_model_config(model, headers=self.headers, **self._config_kwargs())
        return config_dict(raw)

    async def close(self) -> None:
        for closing in self._clients.close_all():
            await closing
