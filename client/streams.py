"""One gRPC stream per call, for decoupled models (generation, streaming speech), sync and asyncio.

Both yield `parse(result)`'s item for each response until its flag says it was the last (each response
is parsed once); errors become TritonizeError with
Triton's message and status (a streamed error's code travels in its text, see client/status.py);
leaving early (break, exception, closed generator) cancels the request on the server. A call that got
its last response is read (sync: stopped) to the server's end before the stream is let go, never
cancelled by its channel closing (see `aio_stream`).
"""

from __future__ import annotations

import queue
from typing import AsyncIterator, Callable, Iterator

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client.errors import calling
from tritonize.client.types import TritonizeError


def _error(error, model: str, url: str, untagged: str | None) -> TritonizeError:
    """A streamed error; `untagged`: the status to give one that names no code (see GenerationClient)."""
    e = TritonizeError.wrap(error, model, url)
    return e if e.status or not untagged else TritonizeError(e.message, untagged, model)


def _reason(responses: queue.Queue, fallback: Exception) -> Exception:
    """The error the stream's callback got, if it got one in time."""
    try:
        _, error = responses.get(timeout=1.0)
    except queue.Empty:
        return fallback
    return error or fallback


def final_flag(result) -> bool:
    final = result.get_response().parameters.get("triton_final_response")
    return bool(final and final.bool_param)


def as_is(result) -> tuple:
    """The default parse: the raw result, and whether it was the final response."""
    return result, final_flag(result)


def grpc_stream(url: str, request: dict, *, model: str, timeout_s: float, headers: dict | None = None,
                parse: Callable = as_is, untagged: str | None = None) -> Iterator:
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    finished = False
    try:
        with calling(model, url):
            client.start_stream(lambda result, error: responses.put((result, error)), headers=headers)
            try:
                client.async_stream_infer(**request)
            except InferenceServerException as broken:  # the stream failed first (e.g. refused): its reason went to the callback
                raise _reason(responses, broken) from None
        while not finished:
            try:
                result, error = responses.get(timeout=timeout_s)
            except queue.Empty:
                raise TritonizeError(f"no response within {timeout_s:.0f} s", "DEADLINE_EXCEEDED", model) from None
            if error is not None:
                finished = True
                raise _error(error, model, url, untagged)
            item, finished = parse(result)
            yield item
    finally:
        client.stop_stream(cancel_requests=not finished)
        client.close()


async def aio_stream(client, request: dict, *, model: str, timeout_s: float, headers: dict | None = None,
                     parse: Callable = as_is, url: str = "the server", untagged: str | None = None) -> AsyncIterator:
    async def requests():
        yield request

    with calling(model, url):
        responses = client.stream_infer(requests(), stream_timeout=timeout_s, headers=headers)
    finished = False
    try:
        while not finished:
            with calling(model, url):  # a broken stream (no server, deadline) raises grpc's own exception here
                try:
                    result, error = await responses.__anext__()
                except StopAsyncIteration:
                    break
            if error is not None:
                finished = True
                raise _error(error, model, url, untagged)
            item, finished = parse(result)
            yield item
        # Read on to the server's end of the call: a call left open is cancelled when its channel
        # closes, and Triton 2.51's gRPC front end can then keep the model referenced (it never unloads).
        with calling(model, url):
            async for _ in responses:
                pass
    finally:
        if not finished:
            responses.cancel()
