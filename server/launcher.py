"""Start the real `tritonserver`, wait until it is ready, stop it without leaving a process behind."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonize.server.binary import TritonBinary, find_binary

# The embedded Triton (2.51) predates the 2025 security fixes: keep these APIs behind a key header.
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
RESTRICTED_HEADER = "tritonize-admin-key"

_LOAD_FAILURE = re.compile(r"failed to load '([^']+)'(?: version \d+)?: (.*)")


class ServerStartError(RuntimeError):
    """tritonserver exited or never became ready; carries the tail of its log."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(f"{message}\n--- tritonserver log (tail) ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


class ModelLoadError(ServerStartError):
    """One or more models failed to load; `failures` maps model name -> Triton's reason."""

    def __init__(self, failures: dict[str, str], log_tail: str = ""):
        names = ", ".join(f"'{m}': {r}" for m, r in failures.items())
        super().__init__(f"Triton failed to load model(s) {names}", log_tail)
        self.failures = failures


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports (all held open while choosing, so the OS cannot hand out one twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class ServerConfig:
    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000  # 0 picks a free port
    grpc_port: int = 8001
    metrics_port: int = 8002
    binary: str = "auto"  # auto | embedded | path
    log_file: Path | None = None  # default: a file in a temporary folder
    startup_timeout_s: float = 180.0
    exit_timeout_s: int = 30  # how long in-flight requests may run on after SIGTERM
    restricted_key: str = field(default_factory=lambda: secrets.token_hex(16))
    log_verbose: int = 0
    cpus: str | None = None  # pin the server (and its backend stubs) to these cores, e.g. "0" (taskset)
    # --http-max-input-size (bytes), passed only when set: Triton >= 2.59 (NGC 25.07); the embedded 2.51 lacks it.
    http_max_input_size: int | None = None
    extra_args: list[str] = field(default_factory=list)


class TritonServer:
    """A supervised tritonserver process; use as a context manager or call start()/stop()."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.binary: TritonBinary | None = None
        self.log_file = Path(config.log_file) if config.log_file else Path(tempfile.mkdtemp(prefix="tritonize-")) / "tritonserver.log"
        spare = iter(free_ports(3, config.host))
        self.http_port, self.grpc_port, self.metrics_port = (
            p or next(spare) for p in (config.http_port, config.grpc_port, config.metrics_port)
        )

    # -- addresses -------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.metrics_port}/metrics"

    def restricted_headers(self, protocol: str = "grpc") -> dict[str, str]:
        """Headers that unlock the restricted APIs (model repository, shared memory, logging, trace)."""
        # Triton's gRPC front end expects the key under a prefixed header name.
        name = f"triton-grpc-protocol-{RESTRICTED_HEADER}" if protocol == "grpc" else RESTRICTED_HEADER
        return {name: self.config.restricted_key}

    # -- lifecycle -------------------------------------------------------------------------------
    def command(self) -> list[str]:
        c = self.config
        restricted = f"{','.join(RESTRICTED_APIS)}:{RESTRICTED_HEADER}={c.restricted_key}"
        return [
            *self.binary.args(),
            f"--model-repository={Path(c.model_repository).resolve()}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={c.exit_timeout_s}",
            f"--http-address={c.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={c.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={c.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            f"--log-verbose={c.log_verbose}",
            f"--log-file={self.log_file}",
            *([f"--http-max-input-size={c.http_max_input_size}"] if c.http_max_input_size else []),
            *c.extra_args,
        ]

    def start(self) -> "TritonServer":
        if self.process is not None:
            raise RuntimeError("server already started")
        repo = Path(self.config.model_repository)
        if not repo.is_dir():
            raise ServerStartError(f"model repository {repo} does not exist (run `tritonize convert` first)")
        self.binary = find_binary(self.config.binary)
        if self.config.http_max_input_size and self.binary.kind == "embedded":
            raise ServerStartError("http_max_input_size needs tritonserver >= 2.59 (NGC 25.07); the embedded binary is 2.51 "
                                   "and has no such flag")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.write_text("")
        env = {**os.environ, **self.binary.env}
        # Own process group: a terminal's Ctrl-C reaches us, we forward it, and stop() can reap stubs.
        command = (["taskset", "-c", self.config.cpus] if self.config.cpus else []) + self.command()
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self.wait_ready(self.config.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._raise_start_failure(f"tritonserver exited with code {self.process.returncode} during start-up")
            if self.is_ready():
                return
            time.sleep(0.2)
        self._raise_start_failure(f"tritonserver was not ready after {timeout_s:.0f} s")

    def is_ready(self) -> bool:
        """Health says ready and the metrics endpoint answers (Triton starts it after HTTP)."""
        return _answers(f"http://{self.http_url}/v2/health/ready") and _answers(self.metrics_url)

    def _raise_start_failure(self, message: str) -> None:
        tail = self.log_tail()
        failures = load_failures(self.log_file.read_text(errors="replace") if self.log_file.exists() else "")
        if failures:
            raise ModelLoadError(failures, tail)
        raise ServerStartError(message, tail)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (Triton lets in-flight requests finish), then SIGKILL the whole group if it hangs."""
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=self.config.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait()
        # Python-backend stubs share the group; none may outlive the server.
        _killpg(p.pid, signal.SIGKILL)
        return p.returncode

    def group_alive(self) -> bool:
        """True while any process of the server's group (server or backend stub) still exists."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def load_failures(log: str) -> dict[str, str]:
    """Model name -> Triton's own reason, from the 'failed to load' lines of a server log."""
    failures: dict[str, str] = {}
    for line in log.splitlines():
        m = _LOAD_FAILURE.search(line)
        if m:
            failures.setdefault(m.group(1), m.group(2).strip())
    return failures


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
