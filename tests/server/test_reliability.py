"""Reliability against the real server: steps that heal, readiness that tells the truth, a drain that
loses nothing (ensembles and generation streams), no orphans, exact overload, clear start failures.

Runs alone: `pytest tests/server/test_reliability.py`. Servers here are their own (a small copy of the session
repository), because these tests kill stubs and stop servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tritonize.client import AsyncGenerationClient, Client, GenerationClient, TritonizeError
from tritonize.server import ServerConfig, ServerStartError, TritonServer
from tritonize.server.health import serve_health
from tritonize.server.launcher import free_ports
from tritonize.server.stubs import stubs_of
from tritonize.server.supervisor import Supervisor
from tests.conftest import EMBEDDER
from tests.server.regions import assert_only_its_regions_removed, shm_regions
from tests.tiny_generators import GPT2, GPT2_LIMITS

LONG_TEXT = " ".join(["Dynamic batching groups requests that arrive together into one model execution."] * 12)


def _copy_models(src: Path, dst: Path, prefixes: list[str]) -> Path:
    for folder in src.iterdir():
        if folder.is_dir() and any(folder.name == p or folder.name.startswith(p + "_") for p in prefixes):
            shutil.copytree(folder, dst / folder.name)
    return dst


@pytest.fixture(scope="module")
def small_repo(built, tmp_path_factory) -> Path:
    """The MiniLM ensemble and the tiny GPT-2 generators, copied from the session repository."""
    return _copy_models(built["repository"], tmp_path_factory.mktemp("small_repo"), [EMBEDDER, GPT2, GPT2_LIMITS])


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait(predicate, timeout_s: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


# -- a killed step is restored; readiness says so meanwhile ------------------------------------------
def test_killed_step_is_restored_and_readiness_tells_the_truth(small_repo, foreign_region):
    before = shm_regions()
    server = TritonServer(ServerConfig(small_repo, http_port=0, grpc_port=0, metrics_port=0)).start()
    supervisor = Supervisor(server, poll_s=0.1).start()
    health = serve_health(supervisor, "127.0.0.1", 0)
    ready_url = f"http://127.0.0.1:{health.server_address[1]}/v2/health/ready"
    try:
        with Client(server.grpc_url) as c:
            expected = c.embed(["the step comes back"], model=EMBEDDER)
            assert _get(ready_url) == (200, {"ready": True})
            outcomes: list[tuple[float, str]] = []  # (when the request was sent, how it ended)
            stop = threading.Event()

            def load() -> None:  # requests keep arriving while the step dies and comes back
                with Client(server.grpc_url) as lc:
                    while not stop.is_set():
                        sent = time.monotonic()
                        try:
                            lc.embed(["the step comes back"], model=EMBEDDER)
                            outcomes.append((sent, "ok"))
                        except TritonizeError:
                            outcomes.append((sent, "error"))
                        time.sleep(0.01)

            worker = threading.Thread(target=load)
            worker.start()
            victim = next(s for s in stubs_of(server.process.pid) if s.model == f"{EMBEDDER}_model")
            os.kill(victim.pid, signal.SIGKILL)
            not_ready = _wait(lambda: _get(ready_url)[0] == 503, timeout_s=5, every=0.02)
            restored = _wait(lambda: _get(ready_url)[0] == 200, timeout_s=60)
            restored_at = time.monotonic()
            time.sleep(2)
            stop.set()
            worker.join(timeout=30)

            assert not_ready, "readiness never said not ready while the step was dead"
            assert restored, "the step was not restored within 60 s"
            assert supervisor.restarts[f"{EMBEDDER}_model"] == 1
            assert any(r == "error" for _, r in outcomes), "no request met the dead step: kill it under load"
            after = [r for sent, r in outcomes if sent > restored_at]
            assert after and all(r == "ok" for r in after), "a request sent after readiness came back failed"
            # After the restore every request succeeds with the same answer as before.
            for _ in range(5):
                np.testing.assert_allclose(c.embed(["the step comes back"], model=EMBEDDER), expected, atol=1e-6)
            restored_stubs = server.stubs()
            assert victim.pid not in {s.pid for s in restored_stubs}
            # The dead stub's region and the new stubs' are all recorded as this server's.
            assert {victim.shm_region} | {s.shm_region for s in restored_stubs} <= server.shm_regions
    finally:
        health.shutdown()
        started = time.monotonic()
        supervisor.drain_and_stop()
        # Triton 2.51 never releases the dead instance; the stop must not wait out its exit timeout.
        assert time.monotonic() - started < 20
        assert not server.group_alive()
        # No region of any stub it ever started is left (the dead one's included), and no other was removed.
        assert_only_its_regions_removed(server, before, foreign_region)


# -- SIGTERM: a drain that loses nothing -------------------------------------------------------------
def _serve(repo: Path, *extra: str) -> tuple[subprocess.Popen, dict[str, int]]:
    http, grpc, metrics, health = free_ports(4)
    cmd = [sys.executable, "-m", "tritonize", "serve", "-r", str(repo), "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics), "--health-port", str(health), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, {"http": http, "grpc": grpc, "metrics": metrics, "health": health}


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _tritonserver_of(serve_pid: int) -> int | None:
    for pid in _children(serve_pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tritonserver"):
                return pid
        except OSError:
            pass
    return None


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def test_sigterm_drains_ensembles_and_streams_with_nothing_lost(small_repo, foreign_region):
    proc, ports = _serve(small_repo, "--exit-timeout", "60")
    url = f"127.0.0.1:{ports['grpc']}"
    health_url = f"http://127.0.0.1:{ports['health']}/v2/health/ready"
    try:
        assert _wait(lambda: _answers(health_url), timeout_s=120), proc.stdout.read() if proc.poll() is not None else "not ready"
        triton_pid = _tritonserver_of(proc.pid)
        regions = {s.shm_region for s in stubs_of(triton_pid)}
        with Client(url) as c:
            expected = c.embed([LONG_TEXT], model=EMBEDDER)
        with GenerationClient(url) as g:
            full = g.generate_chunk("the drain", model=GPT2, max_new_tokens=150, repetition_penalty=1.3)

        # An overload burst first (item 6: stops used to hang after one), then the real load.
        async def burst():
            async with AsyncGenerationClient(url) as ac:
                calls = [ac.generate_chunk("burst", model=GPT2_LIMITS, max_new_tokens=40) for _ in range(12)]
                return await asyncio.gather(*calls, return_exceptions=True)

        asyncio.run(burst())

        def embed(_):
            with Client(url) as ec:
                return ec.embed([LONG_TEXT], model=EMBEDDER)

        def stream(_):
            with GenerationClient(url) as gc:
                return list(gc.stream_chunks("the drain", model=GPT2, max_new_tokens=150, repetition_penalty=1.3))

        with ThreadPoolExecutor(104) as pool:
            embeds = [pool.submit(embed, i) for i in range(100)]
            streams = [pool.submit(stream, i) for i in range(4)]
            time.sleep(0.5)
            assert not all(f.done() for f in embeds), "the load ended before SIGTERM: make it longer"
            proc.send_signal(signal.SIGTERM)
            assert _wait(lambda: not _answers(health_url), timeout_s=5, every=0.02), "readiness stayed true during the drain"
            # New requests are refused (soon after readiness went false) while in-flight ones finish.
            def refused() -> bool:
                try:
                    with Client(url) as late:
                        late.embed(["too late"], model=EMBEDDER)
                    return False
                except TritonizeError:
                    return True

            assert _wait(refused, timeout_s=10), "new requests were still accepted 10 s into the drain"
            for f in embeds:
                np.testing.assert_allclose(f.result(timeout=120), expected, atol=1e-5)
            for f in streams:
                chunks = f.result(timeout=120)
                assert chunks[-1].finish_reason in ("length", "eos")
                assert "".join(ch.text for ch in chunks) == full.text
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "stopped (exit code 0)" in out
        assert triton_pid is not None and _group_gone(triton_pid), "tritonserver or a stub outlived `tritonize serve`"
        assert regions and not (regions & shm_regions()), "shared-memory regions leaked"
        assert foreign_region in shm_regions(), "the stop removed a region none of its stubs held"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def chat_repo(built, tmp_path_factory) -> Path:
    """small_repo's models and the chatbot (NAME and NAME_stream) that calls them through BLS."""
    from tests.conftest import CHATBOT

    return _copy_models(built["repository"], tmp_path_factory.mktemp("chat_repo"), [EMBEDDER, GPT2, CHATBOT])


def test_drain_finishes_in_flight_chat_requests_before_unloading_what_they_call(chat_repo, foreign_region):
    """BLS calls are not ensemble steps: the drain unloads the chatbot first (its in-flight questions still
    reach the embedder and the generator), then the models it calls."""
    from tritonize.client import ChatClient
    from tests.conftest import CHATBOT

    question, unrelated = "What command launches Triton with my models?", "What is a good recipe for banana bread?"
    before = shm_regions()
    server = TritonServer(ServerConfig(chat_repo, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=60)).start()
    try:
        assert server.drain_waves[0] == [CHATBOT, f"{CHATBOT}_stream"]
        assert {EMBEDDER, GPT2} <= set(server.drain_waves[1])
        with ChatClient(server.grpc_url) as c:
            retrieved = c.ask(question, model=CHATBOT)
            generated = c.ask(unrelated, model=CHATBOT, max_new_tokens=150, repetition_penalty=1.3)
        assert retrieved.matched and generated.generated

        def ask(i):
            with ChatClient(server.grpc_url) as c:
                if i % 10 == 0:
                    return c.ask(unrelated, model=CHATBOT, max_new_tokens=150, repetition_penalty=1.3)
                if i % 10 == 1:
                    return "".join(c.stream(unrelated, model=CHATBOT, max_new_tokens=150, repetition_penalty=1.3))
                return c.ask(question, model=CHATBOT)

        with ThreadPoolExecutor(60) as pool:
            calls = [pool.submit(ask, i) for i in range(60)]
            time.sleep(0.3)
            assert not all(f.done() for f in calls), "the load ended before the drain: make it longer"
            stopping = pool.submit(server.stop)
            for i, f in enumerate(calls):
                result = f.result(timeout=120)  # raises if a question failed
                expected = generated.text if i % 10 in (0, 1) else retrieved.text
                assert (result if isinstance(result, str) else result.text) == expected
            assert stopping.result(timeout=120) == 0
            assert_only_its_regions_removed(server, before, foreign_region)
    finally:
        server.stop(drain=False)


def test_sigterm_during_startup_leaves_no_process(small_repo):
    proc, _ = _serve(small_repo)
    try:
        assert _wait(lambda: _tritonserver_of(proc.pid) is not None, timeout_s=60), "tritonserver never started"
        triton_pid = _tritonserver_of(proc.pid)
        assert _wait(lambda: any(_children(triton_pid)), timeout_s=60, every=0.02), "no stub started"  # mid-start-up
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "stopped during start-up" in out, out
        assert _wait(lambda: _group_gone(triton_pid), timeout_s=10), "tritonserver or its stubs were orphaned"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


# -- overload is exact ---------------------------------------------------------------------------------
def test_generator_overload_is_exact_under_a_burst(server):
    """tiny-gpt2-limits: one running plus one queued; a burst of 30 gets exactly 2 accepted, 28 refused fast."""

    async def burst():
        async with AsyncGenerationClient(server.grpc_url) as c:
            async def one():
                started = time.monotonic()
                try:
                    await c.generate_chunk("burst", model=GPT2_LIMITS, max_new_tokens=200, repetition_penalty=1.3)
                    return "ok", time.monotonic() - started
                except TritonizeError as e:
                    return e, time.monotonic() - started
            return await asyncio.gather(*[one() for _ in range(30)])

    results = asyncio.run(burst())
    accepted = [r for r, _ in results if r == "ok"]
    refused = [(r, s) for r, s in results if r != "ok"]
    assert len(accepted) == 2, f"{len(accepted)} accepted; the limit is max_sequences + max_queue = 2"
    for error, seconds in refused:
        assert "overloaded" in str(error) and "the capacity is 2 (max_sequences=1 + max_queue=1)" in str(error)
        assert seconds < 5, f"a refusal took {seconds:.1f} s"


# -- start failures and exposure -------------------------------------------------------------------------
def test_malformed_config_names_tritons_reason_and_the_log(tmp_path):
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "config.pbtxt").write_text('name: "bad" backend: "python" input [ { name: "X"')
    (tmp_path / "bad" / "1" / "model.py").write_text("")
    server = TritonServer(ServerConfig(tmp_path, http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=60))
    with pytest.raises(ServerStartError) as e:
        server.start()
    message = str(e.value).split("--- tritonserver log")[0]
    assert "failed to read text proto" in message and "bad/config.pbtxt" in message
    assert str(server.log_file) in message
    assert not server.group_alive()


@pytest.mark.unit
def test_embedded_binary_refuses_a_non_loopback_host(tmp_path):
    server = TritonServer(ServerConfig(tmp_path, host="0.0.0.0", binary="embedded", http_port=0, grpc_port=0, metrics_port=0))
    with pytest.raises(ServerStartError, match="--allow-insecure-embedded") as e:
        server.start()
    assert "security" in str(e.value) and server.process is None


def test_grpc_only_serving(small_repo, tmp_path):
    repo = _copy_models(small_repo, tmp_path / "repo", [EMBEDDER])
    with TritonServer(ServerConfig(repo, http_port=0, grpc_port=0, metrics_port=0, protocols=("grpc",))) as server:
        assert "--allow-http=false" in server.command() and server.is_ready()
        with Client(server.grpc_url) as c:
            assert c.embed(["grpc only"], model=EMBEDDER).shape == (1, 384)
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=2)
    with pytest.raises(ValueError, match="protocols"):
        ServerConfig(repo, protocols=("http",))
