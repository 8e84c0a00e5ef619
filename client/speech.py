"""Speech synthesis through a tritonize voice: `SpeechClient(url).synthesize("Hello.", model="voice")`.

One-shot calls go to the voice's ensemble (gRPC or HTTP); `stream()` calls its decoupled
`<voice>_stream` model over a gRPC stream and yields audio sentence by sentence. Parameters left out
take the voice's own defaults (read once from the ensemble's config).
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonize.client.client import DEFAULT_URLS, _module, config_dict
from tritonize.client.streams import aio_stream, grpc_stream
from tritonize.client.types import TritonizeError

PARAMS = {"speaking_rate": ("SPEAKING_RATE", np.float32, "FP32"), "noise_scale": ("NOISE_SCALE", np.float32, "FP32"),
          "noise_scale_duration": ("NOISE_SCALE_DURATION", np.float32, "FP32"), "seed": ("SEED", np.int64, "INT64")}


@dataclass(frozen=True)
class Audio:
    """16-bit mono PCM samples and their rate."""

    samples: np.ndarray  # int16
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def to_wav(self, path: str | Path) -> Path:
        path = Path(path)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(self.samples.astype("<i2").tobytes())
        return path


def _audio(result) -> Audio:
    return Audio(result.as_numpy("AUDIO")[0], int(result.as_numpy("SAMPLE_RATE").reshape(-1)[0]))


def _inputs(mod, text: str, params: dict) -> list:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    unknown = set(params) - set(PARAMS)
    if unknown:
        raise TypeError(f"unknown synthesis parameter(s) {sorted(unknown)}; known: {sorted(PARAMS)}")
    arrays = {"TEXT": (np.array([[text.encode("utf-8")]], dtype=object), "BYTES")}
    for key, (name, dtype, triton_type) in PARAMS.items():
        arrays[name] = (np.array([[params[key]]], dtype=dtype), triton_type)
    out = []
    for name, (data, triton_type) in arrays.items():
        tensor = mod.InferInput(name, list(data.shape), triton_type)
        tensor.set_data_from_numpy(data)
        out.append(tensor)
    return out


class SpeechClient:
    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout_s: float = 300.0, headers: dict | None = None):
        self.protocol, self.url, self.timeout_s, self.headers = protocol, url or DEFAULT_URLS[protocol], timeout_s, headers
        self._mod, _ = _module(protocol, aio=False)
        self._client = self._mod.InferenceServerClient(self.url)
        self._defaults: dict[str, dict] = {}

    def defaults(self, model: str) -> dict:
        """The voice's default parameters (its checkpoint config), seed 0."""
        if model not in self._defaults:
            try:
                kwargs = {"as_json": True} if self.protocol == "grpc" else {}
                config = config_dict(self._client.get_model_config(model, headers=self.headers, **kwargs))
            except InferenceServerException as e:
                raise TritonizeError.wrap(e, model) from None
            self._defaults[model] = {**json.loads(config["parameters"]["defaults"]["string_value"]), "seed": 0}
        return self._defaults[model]

    def synthesize(self, text: str, *, model: str, **params) -> Audio:
        inputs = _inputs(self._mod, text, {**self.defaults(model), **params})
        try:
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            result = self._client.infer(model, inputs, headers=self.headers, **kwargs)
        except InferenceServerException as e:
            raise TritonizeError.wrap(e, model) from None
        return _audio(result)

    def stream(self, text: str, *, model: str, **params) -> Iterator[Audio]:
        """Audio sentence by sentence (with the pause after it), from the voice's streaming model."""
        import tritonclient.grpc as grpcclient

        if self.protocol != "grpc":
            raise ValueError("streaming speech is a gRPC stream: use SpeechClient(grpc_url, protocol='grpc')")
        inputs = _inputs(grpcclient, text, {**self.defaults(model), **params})
        request = {"model_name": f"{model}_stream", "inputs": inputs, "enable_empty_final_response": True}
        for result in grpc_stream(self.url, request, model=model, timeout_s=self.timeout_s, headers=self.headers):
            if result.as_numpy("AUDIO") is not None:
                yield _audio(result)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "SpeechClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSpeechClient:
    """asyncio variant (gRPC): `await synthesize(...)`, `async for audio in stream(...)`."""

    def __init__(self, url: str | None = None, timeout_s: float = 300.0, headers: dict | None = None):
        import tritonclient.grpc.aio as aio

        self.url, self.timeout_s, self.headers = url or DEFAULT_URLS["grpc"], timeout_s, headers
        self._client = aio.InferenceServerClient(self.url)
        self._defaults: dict[str, dict] = {}

    async def defaults(self, model: str) -> dict:
        if model not in self._defaults:
            config = config_dict(await self._client.get_model_config(model, headers=self.headers, as_json=True))
            self._defaults[model] = {**json.loads(config["parameters"]["defaults"]["string_value"]), "seed": 0}
        return self._defaults[model]

    async def synthesize(self, text: str, *, model: str, **params) -> Audio:
        import tritonclient.grpc as grpcclient

        inputs = _inputs(grpcclient, text, {**await self.defaults(model), **params})
        try:
            result = await self._client.infer(model, inputs, headers=self.headers, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise TritonizeError.wrap(e, model) from None
        return _audio(result)

    async def stream(self, text: str, *, model: str, **params) -> AsyncIterator[Audio]:
        import tritonclient.grpc as grpcclient

        request = {"model_name": f"{model}_stream", "inputs": _inputs(grpcclient, text, {**await self.defaults(model), **params}),
                   "enable_empty_final_response": True}
        async for result in aio_stream(self._client, request, model=model, timeout_s=self.timeout_s, headers=self.headers):
            if result.as_numpy("AUDIO") is not None:
                yield _audio(result)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncSpeechClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
