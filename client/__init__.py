"""The typed client for tritonize pipelines (tritonclient + numpy, never torch)."""

from tritonize.client.chat import Answer, AsyncChatClient, Candidate, ChatClient
from tritonize.client.client import AsyncClient, Client
from tritonize.client.rerank import Ranked, RerankScores
from tritonize.client.generation import AsyncGenerationClient, GenerationChunk, GenerationClient
from tritonize.client.speech import AsyncSpeechClient, Audio, SpeechClient
from tritonize.client.types import ModelInfo, Prediction, TritonizeError

__all__ = [
    "AsyncClient", "AsyncGenerationClient", "Client", "GenerationChunk", "GenerationClient", "ModelInfo", "Prediction",
    "TritonizeError", "Audio", "SpeechClient", "AsyncSpeechClient", "Answer", "AsyncChatClient", "Candidate", "ChatClient", "Ranked", "RerankScores",
]
