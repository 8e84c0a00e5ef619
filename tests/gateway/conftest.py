"""What the gateway's tests share: the gateway in this process in front of the session's server (`base`),
the official `openai` SDK pointed at it (`oai`), and the check of OpenAI's error envelope (`error_of`)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx
import openai
import pytest

from tritonize.gateway.app import GatewaySettings, build_app
from tritonize.server.launcher import free_port


@contextmanager
def running(settings: GatewaySettings):
    """The gateway in this process: uvicorn in a thread with its own event loop, on a free port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(build_app(settings), host=settings.host, port=settings.port, log_level="warning",
                                           access_log=False, lifespan="on", http="httptools"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def base(server):
    with running(GatewaySettings(server.grpc_url, port=free_port())) as url:
        yield url


@pytest.fixture(scope="module")
def oai(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


def error_of(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["param"] == param, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]
