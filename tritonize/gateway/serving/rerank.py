"""POST /v1/rerank on a rerank pipeline (a cross-encoder), through the project's AsyncClient (the gateway's
one shared channel): the documents by descending relevance, the first `top_n` of them."""

from __future__ import annotations

from tritonize.client import AsyncClient, TritonizeError
from tritonize.families import RERANK
from tritonize.gateway.errors import ApiError, bad_param, from_triton
from tritonize.gateway.protocol import RerankDocument, RerankRequest, RerankResponse, RerankResult, RerankUsage
from tritonize.gateway.registry import Registry


def rerank_error(e: TritonizeError) -> ApiError:
    """The runtime's messages start with the tensor it refuses (QUERY is `query`, DOCUMENTS `documents`), the
    client's with the field."""
    for prefix, param in (("QUERY", "query"), ("DOCUMENTS", "documents"), ("query", "query"), ("documents", "documents")):
        if e.message.startswith(prefix) and (e.status or "").upper() == "INVALID_ARG":
            return bad_param(param, f"{param}{e.message[len(prefix):]}")
    return from_triton(e, "documents")


class RerankServing:
    def __init__(self, client: AsyncClient, registry: Registry):
        self.client, self.registry = client, registry

    async def create(self, request: RerankRequest) -> RerankResponse:
        await self.registry.ensure_ready()
        await self.registry.get(request.model, RERANK)
        try:
            out = await self.client.rerank_scores(request.query, request.documents, model=request.model)
        except TritonizeError as e:
            raise rerank_error(e) from None
        order = out.order[: request.top_n or len(out.order)]
        results = [RerankResult(index=int(i), relevance_score=float(out.scores[i]),
                                document=RerankDocument(text=request.documents[i]) if request.return_documents else None)
                   for i in order]
        return RerankResponse(model=request.model, results=results, usage=RerankUsage(total_tokens=out.tokens))
