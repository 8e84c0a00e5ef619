"""The typed client for tritonize pipelines (tritonclient + numpy, never torch)."""

from client.client import AsyncClient, Client
from client.generation import AsyncGenerationClient, GenerationChunk, GenerationClient
from client.speech import AsyncSpeechClient, Audio, SpeechClient
from client.types import ModelInfo, Prediction, TritonizeError

__all__ = [
    "AsyncClient", "AsyncGenerationClient", "Client", "GenerationChunk", "GenerationClient", "ModelInfo", "Prediction",
    "TritonizeError", "Audio", "SpeechClient", "AsyncSpeechClient",
]
