"""Start the real `tritonserver`, wait until it is ready, drain and stop it without leaving a process behind.

Models are loaded in explicit model-control mode (all of them at start) so that the supervisor can
restore a step whose stub died and so that a stop can drain: Triton's own SIGTERM stops every model's
scheduler at once, which fails an ensemble's in-flight requests at their next step. `stop()` first
unloads the models clients call (ensembles, generators); Triton refuses their new requests and
finishes the in-flight ones, whose steps are still loaded; only then is the server signalled.
"""

from __future__ import annotations

import ctypes
import ipaddress
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
from tritonize.server.control import ModelControl
from tritonize.server.memory import with_huge_pages
from tritonize.server.stubs import Stub, remove_shm_regions, stubs_of

# The embedded Triton (2.51) predates the 2025 security fixes: keep these APIs behind a key header.
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
RESTRICTED_HEADER = "tritonize-admin-key"

_LOAD_FAILURE = re.compile(r"failed to load '([^']+)'(?: version \d+)?: (.*)")
_ERROR_LINE = re.compile(r'^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?(.*?)"?$')
_BENIGN_ERRORS = ("CudaDriverHelper has not been initialized",)  # every start on a machine without a GPU
PROTOCOLS = ("http", "grpc")


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
    huge_pages: bool = True  # glibc's malloc asks for transparent huge pages (server/memory.py)
    protocols: tuple[str, ...] = PROTOCOLS  # ("grpc",) turns the HTTP front end off
    # The embedded 2.51 binary predates NVIDIA's 2025-2026 Triton security fixes: loopback only, unless
    # the operator accepts that risk explicitly.
    allow_insecure_embedded: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.protocols) - set(PROTOCOLS)
        if unknown or "grpc" not in self.protocols:
            raise ValueError(f"protocols must be 'grpc' or 'http,grpc' (gRPC carries streaming and model control), not {','.join(self.protocols)}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, so a killed launcher leaves no server."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TritonServer:
    """A supervised tritonserver process; use as a context manager or call start()/stop()."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.binary: TritonBinary | None = None
        self.control: ModelControl | None = None
        self.drain_waves: list[list[str]] = []  # entry models, BLS callers first (see ModelControl.drain_waves)
        # The /dev/shm region of every stub this server ever started (seen at readiness, by the supervisor,
        # at stop): the stop removes those still left, a dead stub's included, and no other.
        self.shm_regions: set[str] = set()
        self.removed_regions: list[str] = []  # what the last stop removed
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
            "--model-control-mode=explicit",  # the supervisor reloads dead steps; stop() drains
            "--load-model=*",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={c.exit_timeout_s}",
            *([f"--http-address={c.host}", f"--http-port={self.http_port}"] if "http" in c.protocols else ["--allow-http=false"]),
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
        if self.binary.kind == "embedded" and not is_loopback(self.config.host) and not self.config.allow_insecure_embedded:
            raise ServerStartError(
                f"refusing to bind the embedded tritonserver (2.51) to {self.config.host}: it predates NVIDIA's 2025-2026 "
                "Triton security bulletins (HTTP front-end flaws, an authentication bypass), so it serves loopback only. "
                "Serve a patched NGC release (see the Dockerfile) with --binary path, or accept the risk with "
                "--allow-insecure-embedded."
            )
        if self.config.http_max_input_size and self.binary.kind == "embedded":
            raise ServerStartError("http_max_input_size needs tritonserver >= 2.59 (NGC 25.07); the embedded binary is 2.51 "
                                   "and has no such flag")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.write_text("")
        env = {**os.environ, **self.binary.env}
        env = with_huge_pages(env) if self.config.huge_pages else env
        # Own process group: a terminal's Ctrl-C reaches us, we forward it, and stop() can reap stubs.
        command = (["taskset", "-c", self.config.cpus] if self.config.cpus else []) + self.command()
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:  # a signal or Ctrl-C during start-up lands here too: nothing may be left running
            self.wait_ready(self.config.startup_timeout_s)
            self.stubs()  # every model is loaded at start: record their regions
            self.control = ModelControl(self.grpc_url, self.restricted_headers("grpc"))
            self.drain_waves = self.control.drain_waves()  # known now, so a drain starts refusing at once
        except BaseException:
            self.stop(drain=False)
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
        """Triton's health says ready and the metrics endpoint answers (Triton starts it after HTTP).
        Triton's view only: the supervisor adds dead steps and draining."""
        if "http" in self.config.protocols:
            healthy = _answers(f"http://{self.http_url}/v2/health/ready")
        else:
            healthy = _grpc_ready(self.grpc_url)
        return healthy and _answers(self.metrics_url)

    def _raise_start_failure(self, message: str) -> None:
        tail = self.log_tail()
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        failures = load_failures(log)
        if failures:
            raise ModelLoadError(failures, tail)
        errors = error_lines(log)  # e.g. a config.pbtxt that does not parse
        reason = ("; Triton says: " + " | ".join(errors)) if errors else ""
        raise ServerStartError(f"{message}{reason} (full log: {self.log_file})", tail)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stubs(self) -> list[Stub]:
        """The server's live stubs; records their regions (see `shm_regions`). Read stubs through this."""
        found = stubs_of(self.process.pid) if self.process is not None else []
        self.shm_regions |= {s.shm_region for s in found}
        return found

    def drain(self, timeout_s: float | None = None) -> list[str]:
        """Refuse new requests and let in-flight ones finish: unload the entry models (ensembles,
        generators, streaming voices) and wait until they are gone. Returns the models still busy when
        the time ran out."""
        if self.control is None or self.process is None or self.process.poll() is not None:
            return []
        deadline = time.monotonic() + (self.config.exit_timeout_s if timeout_s is None else timeout_s)
        busy: list[str] = []
        try:
            for wave in self.drain_waves:  # a wave's in-flight requests finish before the models they call go
                busy += self.control.unload(wave, max(0.0, deadline - time.monotonic()))
        except Exception:  # the server is going down anyway; SIGTERM follows
            pass
        return busy

    def stop(self, drain: bool = True, kill_after_s: float | None = None) -> int | None:
        """Drain (see `drain`), SIGTERM, then SIGKILL the whole group if it has not exited after
        `kill_after_s` (default: Triton's exit timeout and a margin)."""
        p = self.process
        if p is None:
            return None
        if drain:
            self.drain()
        if self.control is not None:
            self.control.close()
            self.control = None
        if p.poll() is None:
            self.stubs()
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=self.config.exit_timeout_s + 15 if kill_after_s is None else kill_after_s)
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait()
        # Python-backend stubs share the group; none may outlive the server, nor may their memory: the
        # regions of every stub it ever started, a dead one's too (Triton keeps a stub that died with a
        # request inside until the kill, so only now is its region free), unless some process still holds it.
        _killpg(p.pid, signal.SIGKILL)
        _wait_group_gone(p.pid, timeout_s=5)
        self.removed_regions = remove_shm_regions(set(self.shm_regions))
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


def error_lines(log: str) -> list[str]:
    """Triton's own error messages (E lines) of a log, without the ones every CPU-only start prints."""
    found = []
    for line in log.splitlines():
        m = _ERROR_LINE.match(line)
        if m and not any(b in m.group(1) for b in _BENIGN_ERRORS) and m.group(1) not in found:
            found.append(m.group(1))
    return found


def _grpc_ready(url: str) -> bool:
    import tritonclient.grpc as grpcclient

    try:
        with grpcclient.InferenceServerClient(url) as c:
            return c.is_server_ready(client_timeout=2)
    except Exception:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
