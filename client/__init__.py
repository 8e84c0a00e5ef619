"""The typed client for tritonize pipelines (tritonclient + numpy, never torch)."""

from client.client import AsyncClient, Client
from client.types import ModelInfo, Prediction, TritonizeError

__all__ = ["AsyncClient", "Client", "ModelInfo", "Prediction", "TritonizeError"]
