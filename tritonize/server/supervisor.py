"""The supervisor of a running `TritonServer`: restores model steps whose stub died, and owns readiness.

Triton 2.51 does not restart a Python-backend stub that dies (killed, out of memory, a crash in native
code) and keeps answering ready while every request through that step fails. The supervisor watches
the stubs (`stubs.py`); when one is gone it reports not ready, reloads that model (new stubs; Triton
swaps them in), waits until the replaced instances have exited, and reports ready again. Requests
that were in the dead step get Triton's error; later ones succeed.

Every stub it sees is read through `TritonServer.stubs()`, which records the stub's /dev/shm region. A
stub that died with a request inside keeps its instance, and that region, after the reload (Triton 2.51):
the server's stop removes it once the server is gone, with every other region its stubs ever held.

Readiness here is the truth to probe (`tritonize serve --health-port`): Triton's ready AND no step
being restored AND not draining.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from tritonize.server.launcher import TritonServer
from tritonize.server.stubs import Stub, alive


class Supervisor:
    def __init__(self, server: TritonServer, poll_s: float = 0.25, log: Callable[[str], None] = lambda m: None):
        self.server = server
        self.poll_s = poll_s
        self.log = log
        self.restarts: collections.Counter[str] = collections.Counter()
        self.restoring: set[str] = set()
        self.draining = False
        self._stubs: dict[int, Stub] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tritonize-supervisor", daemon=True)

    def start(self) -> "Supervisor":
        self._stubs = {s.pid: s for s in self.server.stubs()}
        self._thread.start()
        return self

    # -- readiness ---------------------------------------------------------------------------------
    def not_ready_reason(self) -> str | None:
        """None when ready; otherwise why not, in words an operator can act on."""
        if self.server.process is None or self.server.process.poll() is not None:
            return "tritonserver is not running"
        if self.draining:
            return "draining: in-flight requests are finishing, new ones are refused"
        if self.restoring:
            return f"restoring model step(s) whose stub died: {', '.join(sorted(self.restoring))}"
        if not self.server.is_ready():
            return "tritonserver says it is not ready"
        return None

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    # -- shutdown ----------------------------------------------------------------------------------
    # Triton 2.51 never releases the instance of a step whose stub died with requests inside it: after a
    # restore, its exit would wait out the whole exit timeout and fail. The drain has finished every
    # request by then, so a short wait and a kill lose nothing.
    KILL_AFTER_RESTORE_S = 5.0

    def drain_and_stop(self) -> int | None:
        """Readiness off first, then the server's drain and stop (see `TritonServer.stop`)."""
        self.draining = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        return self.server.stop(kill_after_s=self.KILL_AFTER_RESTORE_S if self.restarts else None)

    # -- the watch ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.server.process.poll() is not None:
                return  # the server itself exited: `tritonize serve` reports that and stops
            dead = sorted({s.model for s in self._stubs.values() if not alive(s.pid)})
            if dead and not self.draining:
                self._restore(dead)

    def _restore(self, models: list[str]) -> None:
        self.restoring = set(models)
        started = time.monotonic()
        for model in models:
            expected = sum(1 for s in self._stubs.values() if s.model == model)
            old = {pid for pid, s in self._stubs.items() if s.model == model}
            self.log(f"model step {model}: a stub process died; reloading it")
            try:
                self.restarts[model] += 1
                self.server.control.reload(model, self.restarts[model])
            except Exception as exc:  # keep not-ready and try again at the next poll
                self.log(f"model step {model}: reload failed: {exc}")
                return
            self._wait_for_new_instances(model, old, expected)
        self._stubs = {s.pid: s for s in self.server.stubs()}
        self.restoring = set()
        self.log(f"restored {', '.join(models)} in {time.monotonic() - started:.1f} s")

    def _wait_for_new_instances(self, model: str, old: set[int], expected: int, timeout_s: float = 30.0) -> None:
        """Until the model's stubs are all new ones (the replaced instances exit after the swap)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = [s for s in self.server.stubs() if s.model == model]
            if len(current) >= expected and not any(s.pid in old for s in current):
                return
            time.sleep(0.05)
