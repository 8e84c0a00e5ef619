"""POST /v1/audio/speech on a voice, streamed sentence by sentence from its `NAME_stream` model.

`voice` must name the served voice (the `model`) or be "default": a tritonize voice pipeline is one
voice. `speed` scales the voice's own speaking rate. Formats: `pcm` is raw 16-bit little-endian mono at
the voice's rate (also sent as the `X-Sample-Rate` header); `wav` is the same samples after a RIFF header
whose sizes say "unknown length" (0xFFFFFFFF), the usual form of a WAV streamed before its end is known
(Python's `wave`, ffmpeg and browsers read it).
"""

from __future__ import annotations

import logging
import struct
from typing import AsyncIterator

from tritonize.client import AsyncSpeechClient, TritonizeError
from tritonize.families import AUDIO_SPEECH
from tritonize.gateway.errors import bad_param, from_triton
from tritonize.gateway.protocol import SpeechRequest
from tritonize.gateway.registry import Registry
from tritonize.gateway.streaming import prefetch

log = logging.getLogger("tritonize.gateway")
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm"}
UNKNOWN_SIZE = 0xFFFFFFFF


def streaming_wav_header(rate: int) -> bytes:
    """RIFF/WAVE header for 16-bit mono PCM of a length not yet known."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", UNKNOWN_SIZE)


class SpeechServing:
    def __init__(self, client: AsyncSpeechClient, registry: Registry):
        self.client, self.registry = client, registry

    async def create(self, request: SpeechRequest) -> tuple[AsyncIterator[bytes], str, dict[str, str]]:
        """The audio bytes as they come, the media type and headers; errors before the first sentence raise."""
        await self.registry.ensure_ready()
        pipeline = await self.registry.get(request.model, AUDIO_SPEECH)
        if request.voice_name not in (request.model, "default"):
            raise bad_param("voice", f"voice must be '{request.model}' (the voice this model serves) or 'default', got '{request.voice_name}'")
        params = {}
        if request.speed is not None:
            defaults = pipeline.json_param("defaults")
            params["speaking_rate"] = float(defaults.get("speaking_rate", 1.0)) * request.speed
        if request.seed is not None:
            params["seed"] = request.seed
        try:
            first, rest = await prefetch(self.client.stream(request.input, model=request.model, **params))
        except TritonizeError as e:
            raise from_triton(e, "input") from None
        rate = first.rate if first is not None else int(pipeline.params.get("sampling_rate", "16000"))

        async def audio() -> AsyncIterator[bytes]:
            if request.response_format == "wav":
                yield streaming_wav_header(rate)
            if first is None:
                return
            yield first.samples.astype("<i2").tobytes()
            try:
                async for sentence in rest:
                    yield sentence.samples.astype("<i2").tobytes()
            except TritonizeError as e:  # the status line is sent: the client sees a short body
                log.warning("speech stream for %s failed after the first sentence: %s", request.model, e.message)
            finally:
                await rest.aclose()

        return audio(), MEDIA_TYPES[request.response_format], {"X-Sample-Rate": str(rate)}
