"""One gRPC stream per call, for decoupled models (generation, streaming speech), sync and asyncio.

Both yield `parse(result)`'s item for each response until its flag says it was the last (each response
is parsed once); errors become TritonizeError with Triton's message; leaving early (break, exception,
closed generator) cancels the request on the server.
"""

from __future__ import annotations

import queue
from typing import AsyncIterator, Callable, Iterator

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client.types import TritonizeError


def final_flag(result) -> bool:
    final = result.get_response().parameters.get("triton_final_response")
    return bool(final and final.bool_param)


def as_is(result) -> tuple:
    """The default parse: the raw result, and whether it was the final response."""
    return result, final_flag(result)


def grpc_stream(url: str, request: dict, *, model: str, timeout_s: float, headers: dict | None = None,
                parse: Callable = as_is) -> Iterator:
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    finished = False
    try:
        client.start_stream(lambda result, error: responses.put((result, error)), headers=headers)
        client.async_stream_infer(**request)
        while not finished:
            try:
                result, error = responses.get(timeout=timeout_s)
            except queue.Empty:
                raise TritonizeError(f"no response within {timeout_s:.0f} s", model=model) from None
            if error is not None:
                finished = True
                raise TritonizeError.wrap(error, model)
            item, finished = parse(result)
            yield item
    except InferenceServerException as e:
        raise TritonizeError.wrap(e, model) from None
    finally:
        client.stop_stream(cancel_requests=not finished)
        client.close()


async def aio_stream(client, request: dict, *, model: str, timeout_s: float, headers: dict | None = None,
                     parse: Callable = as_is) -> AsyncIterator:
    async def requests():
        yield request

    try:
        responses = client.stream_infer(requests(), stream_timeout=timeout_s, headers=headers)
    except InferenceServerException as e:
        raise TritonizeError.wrap(e, model) from None
    finished = False
    try:
        async for result, error in responses:
            if error is not None:
                finished = True
                raise TritonizeError.wrap(error, model)
            item, finished = parse(result)
            yield item
            if finished:
                break
    except InferenceServerException as e:
        raise TritonizeError.wrap(e, model) from None
    finally:
        if not finished:
            responses.cancel()
