"""POST /v1/embeddings on an embedding pipeline, through the project's AsyncClient (one shared channel)."""

from __future__ import annotations

import base64

import numpy as np

from tritonize.client import AsyncClient, TritonizeError
from tritonize.client.client import embed_parameters
from tritonize.families import EMBEDDINGS
from tritonize.gateway.errors import bad_param, from_triton
from tritonize.gateway.protocol import Embedding, EmbeddingRequest, EmbeddingResponse, Usage
from tritonize.gateway.registry import Registry


class EmbeddingServing:
    def __init__(self, client: AsyncClient, registry: Registry):
        self.client, self.registry = client, registry

    async def create(self, request: EmbeddingRequest) -> EmbeddingResponse:
        await self.registry.ensure_ready()
        pipeline = await self.registry.get(request.model, EMBEDDINGS)
        info = await self._info(request.model)
        size = info.output_dims.get("EMBEDDING", [0])[-1]
        dimensions = None
        if request.dimensions is not None and request.dimensions != size:  # Matryoshka: the first N, re-normalised
            if not 1 <= request.dimensions <= size:
                raise bad_param("dimensions", f"dimensions must be between 1 and {size} for '{request.model}', got {request.dimensions}")
            if info.ensemble:
                raise bad_param("dimensions", f"dimensions must be {size} for '{request.model}': a three-step ensemble serves whole "
                                              f"vectors (convert it with --flavour fused to shorten them), got {request.dimensions}")
            dimensions = request.dimensions
        parameters = embed_parameters(request.prompt_name, dimensions, request.normalize, request.truncate)
        if info.ensemble and parameters:
            name = next(iter(parameters))
            raise bad_param(name, f"{name} is not available on '{request.model}': a three-step ensemble applies no per-request "
                                  "options (convert it with --flavour fused)")
        # TOKEN_COUNT (real tokens per row) is on pipelines converted since the gateway exists.
        outputs = ["EMBEDDING"] + (["TOKEN_COUNT"] if "TOKEN_COUNT" in pipeline.outputs else [])
        try:
            out = await self.client.infer(request.model, request.texts, outputs, parameters)
        except TritonizeError as e:
            raise from_triton(e, "input") from None
        vectors = out["EMBEDDING"].astype("<f4", copy=False)
        tokens = int(out["TOKEN_COUNT"].sum()) if "TOKEN_COUNT" in out else 0
        if request.encoding_format == "base64":  # little-endian float32, as OpenAI's SDK decodes it
            data = [Embedding(index=i, embedding=base64.b64encode(np.ascontiguousarray(v).tobytes()).decode()) for i, v in enumerate(vectors)]
        else:
            data = [Embedding(index=i, embedding=v.tolist()) for i, v in enumerate(vectors)]
        return EmbeddingResponse(data=data, model=request.model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    async def _info(self, model: str):
        try:
            return await self.client.model_info(model)
        except TritonizeError as e:
            raise from_triton(e, "input") from None
