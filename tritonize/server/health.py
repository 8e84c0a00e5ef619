"""The supervisor's health endpoint, for load balancers and Kubernetes probes.

Triton's own `/v2/health/ready` (2.51) cannot say that a step is being restored or that the server is
draining; this one can. Same paths as Triton's, on their own port:
  GET /v2/health/ready  200 {"ready": true} | 503 {"ready": false, "reason": "..."}
  GET /v2/health/live   200 while tritonserver runs, else 503
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tritonize.server.supervisor import Supervisor


def serve_health(supervisor: Supervisor, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; `.server_address[1]` is the bound port; `.shutdown()` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path == "/v2/health/ready":
                reason = supervisor.not_ready_reason()
                self._reply(200 if reason is None else 503, {"ready": reason is None, **({"reason": reason} if reason else {})})
            elif self.path == "/v2/health/live":
                live = supervisor.server.process is not None and supervisor.server.process.poll() is None
                self._reply(200 if live else 503, {"live": live})
            else:
                self._reply(404, {"error": f"unknown path {self.path}: use /v2/health/ready or /v2/health/live"})

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # probes every few seconds: keep the terminal quiet
            pass

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="tritonize-health", daemon=True).start()
    return httpd
