"""Speech synthesis through a tritonize voice: `SpeechClient(url).synthesize("Hello.", model="voice")`.

One-shot calls go to the voice's ensemble (gRPC or HTTP); `stream()` calls its decoupled
`<voice>_stream` model over a gRPC stream and yields audio sentence by sentence. Parameters left out
take the voice's own defaults (read once from the ensemble's config). Only AUDIO and SAMPLE_RATE are
downloaded (`Audio.to_wav` writes the WAV here), never the ensemble's WAV copy of the same samples.
`max_audio_seconds` lowers the voice's limit on the audio's duration for one call.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Iterator

import numpy as np

from tritonize.client.client import DEFAULT_URLS, _module, config_dict
from tritonize.client.errors import calling, check_seed, invalid, utf8
from tritonize.client.pool import ClientPerThread
from tritonize.client.streams import aio_stream, grpc_stream
from tritonize.client.closing import AsyncClosing, Closing

PARAMS = {"speaking_rate": ("SPEAKING_RATE", np.float32, "FP32"), "noise_scale": ("NOISE_SCALE", np.float32, "FP32"),
          "noise_scale_duration": ("NOISE_SCALE_DURATION", np.float32, "FP32"), "seed": ("SEED", np.int64, "INT64"),
          "max_audio_seconds": ("MAX_AUDIO_SECONDS", np.float32, "FP32")}
OPTIONAL = {"max_audio_seconds"}  # sent only when given: the voice's own limit applies otherwise
OUTPUTS = ("AUDIO", "SAMPLE_RATE")


@dataclass(frozen=True)
class Audio:
    """16-bit mono PCM samples and their rate."""

    samples: np.ndarray  # int16
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def to_wav(self, path: str | Path | BinaryIO):
        """Write a 16-bit mono WAV file (to a path or a binary file object) and return where it went."""
        target = path if hasattr(path, "write") else str(Path(path))
        with wave.open(target, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(self.samples.astype("<i2").tobytes())
        return path if hasattr(path, "write") else Path(path)


def _audio(result) -> Audio:
    return Audio(result.as_numpy("AUDIO")[0], int(result.as_numpy("SAMPLE_RATE").reshape(-1)[0]))


def _number(key: str, value) -> float | int:
    """Values must be real numbers; their ranges are the server's to check (one place, named there)."""
    if key == "seed":
        return check_seed(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise invalid(key, f"must be a finite number, got {value!r}")
    return value


def _with_defaults(defaults: dict, params: dict) -> dict:
    """A parameter given as None takes the voice's default (as one left out does)."""
    return {**defaults, **{k: v for k, v in params.items() if v is not None}}


def _inputs(mod, text: str, params: dict) -> list:
    if not isinstance(text, str):
        raise invalid("text", f"must be str, not {type(text).__name__}")
    unknown = set(params) - set(PARAMS)
    if unknown:
        raise invalid("parameters", f"{sorted(unknown)} are unknown synthesis parameter(s); known: {sorted(PARAMS)}")
    arrays = {"TEXT": (np.array([[utf8(text, "text")]], dtype=object), "BYTES")}
    for key, (name, dtype, triton_type) in PARAMS.items():
        if params.get(key) is not None or key not in OPTIONAL:
            arrays[name] = (np.array([[_number(key, params[key])]], dtype=dtype), triton_type)
    out = []
    for name, (data, triton_type) in arrays.items():
        tensor = mod.InferInput(name, list(data.shape), triton_type)
        tensor.set_data_from_numpy(data)
        out.append(tensor)
    return out


def _outputs(mod) -> list:
    return [mod.InferRequestedOutput(name) for name in OUTPUTS]


def _defaults(config: dict) -> dict:
    return {**json.loads(config["parameters"]["defaults"]["string_value"]), "seed": 0}


class SpeechClient(Closing):
    """Blocking speech client; safe to share between threads (HTTP: one connection per thread)."""

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout_s: float = 300.0, headers: dict | None = None):
        self._mod, _ = _module(protocol, aio=False)
        self.protocol, self.url, self.timeout_s, self.headers = protocol, url or DEFAULT_URLS[protocol], timeout_s, headers
        self._clients = ClientPerThread(lambda: self._mod.InferenceServerClient(self.url), per_thread=protocol == "http")
        self._defaults: dict[str, dict] = {}

    def defaults(self, model: str) -> dict:
        """The voice's default parameters (its checkpoint config), seed 0."""
        if model not in self._defaults:
            kwargs = {"as_json": True} if self.protocol == "grpc" else {}
            with calling(model, self.url):
                config = config_dict(self._clients.get().get_model_config(model, headers=self.headers, **kwargs))
            self._defaults[model] = _defaults(config)
        return self._defaults[model]

    def synthesize(self, text: str, *, model: str, **params) -> Audio:
        inputs = _inputs(self._mod, text, _with_defaults(self.defaults(model), params))
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        with calling(model, self.url):
            result = self._clients.get().infer(model, inputs, outputs=_outputs(self._mod), headers=self.headers, **kwargs)
        return _audio(result)

    def stream(self, text: str, *, model: str, **params) -> Iterator[Audio]:
        """Audio sentence by sentence (with the pause after it), from the voice's streaming model."""
        import tritonclient.grpc as grpcclient

        if self.protocol != "grpc":
            raise invalid("protocol", "must be 'grpc' for streaming speech (a gRPC stream): use SpeechClient(grpc_url)")
        inputs = _inputs(grpcclient, text, _with_defaults(self.defaults(model), params))
        request = {"model_name": f"{model}_stream", "inputs": inputs, "enable_empty_final_response": True}
        for result in grpc_stream(self.url, request, model=model, timeout_s=self.timeout_s, headers=self.headers):
            if result.as_numpy("AUDIO") is not None:
                yield _audio(result)

    def close(self) -> None:
        self._clients.close_all()


class AsyncSpeechClient(AsyncClosing):
    """asyncio variant (gRPC): `await synthesize(...)`, `async for audio in stream(...)`."""

    def __init__(self, url: str | None = None, timeout_s: float = 300.0, headers: dict | None = None):
        import tritonclient.grpc.aio as aio

        self.url, self.timeout_s, self.headers = url or DEFAULT_URLS["grpc"], timeout_s, headers
        self._client = aio.InferenceServerClient(self.url)
        self._defaults: dict[str, dict] = {}

    async def defaults(self, model: str) -> dict:
        if model not in self._defaults:
            with calling(model, self.url):
                config = config_dict(await self._client.get_model_config(model, headers=self.headers, as_json=True))
            self._defaults[model] = _defaults(config)
        return self._defaults[model]

    async def synthesize(self, text: str, *, model: str, **params) -> Audio:
        import tritonclient.grpc as grpcclient

        inputs = _inputs(grpcclient, text, _with_defaults(await self.defaults(model), params))
        with calling(model, self.url):
            result = await self._client.infer(model, inputs, outputs=_outputs(grpcclient), headers=self.headers,
                                              client_timeout=self.timeout_s)
        return _audio(result)

    async def stream(self, text: str, *, model: str, **params) -> AsyncIterator[Audio]:
        import tritonclient.grpc as grpcclient

        request = {"model_name": f"{model}_stream", "inputs": _inputs(grpcclient, text, _with_defaults(await self.defaults(model), params)),
                   "enable_empty_final_response": True}
        async for result in aio_stream(self._client, request, model=model, timeout_s=self.timeout_s, headers=self.headers,
                                       url=self.url):
            if result.as_numpy("AUDIO") is not None:
                yield _audio(result)

    async def close(self) -> None:
        await self._client.close()
