"""Streaming responses that stop the Triton work when the client leaves.

`DisconnectAwareStream` always listens for `http.disconnect` while it streams and cancels the body
iterator when it arrives (Starlette does this only for ASGI spec < 2.4, where a server that says 2.4
would leave a queued request waiting until its first write failed). Cancelling the iterator raises
inside our client's gRPC stream, whose `finally` cancels the Triton request: the generator's slot is freed.

`with_cancellation` does the same for a non-streamed handler (vLLM's pattern): the handler runs as a task
raced against the disconnect message. The body has been read by then, so nothing else needs `receive`.

A stream's first item is awaited before the response starts (`prefetch`), so an error there (overload,
bad parameter) still gets its proper status; an error after it is sent as an SSE error event.
"""

from __future__ import annotations

import asyncio
import functools
from typing import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from tritonize.gateway.errors import ApiError


class DisconnectAwareStream(StreamingResponse):
    async def __call__(self, scope, receive, send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def with_cancellation(handler):
    """Run the route handler until it returns or the client disconnects (then cancel it)."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        request: Request = kwargs["raw_request"]
        work = asyncio.ensure_future(handler(*args, **kwargs))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                if not task.done():
                    task.cancel()
        if work.cancelled():
            await asyncio.gather(work, return_exceptions=True)
            return None  # nobody is listening
        return work.result()

    return wrapper


async def prefetch(items: AsyncIterator):
    """(first item, the iterator to go on with); raises what the first step raises."""
    iterator = items.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return None, iterator
    except BaseException:
        await _close(iterator)
        raise
    return first, iterator


async def _close(iterator) -> None:
    close = getattr(iterator, "aclose", None)
    if close:
        await close()


def sse(data: str) -> str:
    return f"data: {data}\n\n"


DONE = "data: [DONE]\n\n"


async def sse_events(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """SSE framing for JSON payloads, an error event if the stream fails midway, and `[DONE]`."""
    try:
        async for payload in events:
            yield sse(payload)
    except ApiError as e:
        yield sse(e.body().decode())
    yield DONE
