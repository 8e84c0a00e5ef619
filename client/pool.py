"""The tritonclient a call uses: one shared gRPC client, or one HTTP client per thread.

tritonclient's HTTP client runs on geventhttpclient, whose connection pool belongs to the thread that
made it: shared by a thread pool, calls hung (8 threads, 200 embeds: none finished in 2 minutes).
gRPC channels are thread-safe, so one gRPC client serves every thread.
"""

from __future__ import annotations

import threading
from typing import Callable


class ClientPerThread:
    def __init__(self, factory: Callable[[], object], per_thread: bool):
        self._factory, self._per_thread = factory, per_thread
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list = []
        self._shared = None if per_thread else self._remember(factory())

    def _remember(self, client):
        with self._lock:
            self._made.append(client)
        return client

    def get(self):
        if not self._per_thread:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._remember(self._factory())
        return client

    def close_all(self) -> list:
        """Close the clients (sync ones; the async caller awaits what this returns)."""
        with self._lock:
            made, self._made = self._made, []
        self._local = threading.local()
        return [c.close() for c in made]
