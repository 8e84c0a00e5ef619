"""`with` / `async with` for every client: leaving the block closes it."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClosing:
    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
