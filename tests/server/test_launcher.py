"""The launcher against the real binary: load failures named, restricted APIs locked, clean shutdown."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.converters.repository import mc, python_step, tensor_in, tensor_out, write_model
from tritonize.converters.repository import Batching
from tritonize.server import ModelLoadError, ServerConfig, TritonServer
from tritonize.server.stubs import remove_shm_regions
from tritonize.server.supervisor import Supervisor
from tests.server.regions import assert_only_its_regions_removed, shm_regions

SLOW_MODEL = '''
import time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        time.sleep(1.5)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
'''


def test_model_that_fails_to_load_is_named_with_tritons_reason(tmp_path):
    config = python_step("broken", [tensor_in("X", "FP32", [1])], [tensor_out("Y", "FP32", [1])], {}, Batching(max_batch_size=4))
    write_model(tmp_path, config, {"model.py": "raise ImportError('no module named fancy_dependency')\n"})
    with pytest.raises(ModelLoadError) as e:
        TritonServer(ServerConfig(tmp_path, http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=60)).start()
    assert "broken" in e.value.failures
    assert "fancy_dependency" in e.value.failures["broken"]
    assert "tritonserver log" in str(e.value)


@pytest.mark.unit
def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        TritonServer(ServerConfig(tmp_path / "nope", http_port=0, grpc_port=0, metrics_port=0)).start()


@pytest.fixture()
def slow_server(tmp_path):
    config = python_step("slow", [tensor_in("X", "FP32", [1])], [tensor_out("Y", "FP32", [1])], {}, Batching(max_batch_size=4))
    write_model(tmp_path, config, {"model.py": SLOW_MODEL})
    return TritonServer(ServerConfig(tmp_path, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=10))


def test_sigterm_lets_in_flight_requests_finish_and_leaves_no_process(slow_server, foreign_region):
    before = shm_regions()
    s = slow_server.start()
    client = grpcclient.InferenceServerClient(s.grpc_url)
    x = grpcclient.InferInput("X", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[7.0]], np.float32))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("y", client.infer("slow", [x]).as_numpy("Y")))
    t.start()
    time.sleep(0.5)  # the request is executing now
    s.process.send_signal(signal.SIGTERM)  # what `tritonize serve` forwards on Ctrl-C / SIGTERM
    t.join(timeout=30)
    assert result["y"][0, 0] == 7.0
    assert s.process.wait(timeout=30) == 0
    s.stop()
    assert_only_its_regions_removed(s, before, foreign_region)
    assert not s.group_alive(), "a tritonserver or backend stub process outlived the server"


def test_context_manager_stop_leaves_no_process(slow_server, foreign_region):
    before = shm_regions()
    with slow_server as s:
        assert s.is_ready()
        pid = s.process.pid
    assert_only_its_regions_removed(s, before, foreign_region)
    assert not s.group_alive()
    assert not Path(f"/proc/{pid}").exists()


def test_a_stub_killed_mid_request_leaves_no_region_after_the_restore_and_stop(slow_server, foreign_region):
    """Triton 2.51 keeps the instance of a stub that died with a request inside (and its /dev/shm region)
    after the supervisor's reload, until the stop kills the server: the stop removes that region too."""
    before = shm_regions()
    s = slow_server.start()
    supervisor = Supervisor(s, poll_s=0.1).start()
    try:
        [victim] = s.stubs()
        client = grpcclient.InferenceServerClient(s.grpc_url)
        x = grpcclient.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[7.0]], np.float32))
        outcome = {}

        def in_flight():
            try:
                outcome["y"] = client.infer("slow", [x]).as_numpy("Y")
            except InferenceServerException as e:
                outcome["error"] = str(e)

        t = threading.Thread(target=in_flight)
        t.start()
        time.sleep(0.5)  # the request is inside the stub now
        os.kill(victim.pid, signal.SIGKILL)
        t.join(timeout=30)
        assert "not healthy" in outcome.get("error", ""), outcome
        deadline = time.monotonic() + 60
        while (supervisor.restarts["slow"] < 1 or not supervisor.ready) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert supervisor.restarts["slow"] == 1 and supervisor.ready, supervisor.not_ready_reason()
        assert client.infer("slow", [x]).as_numpy("Y")[0, 0] == 7.0
        [new] = s.stubs()
        assert new.shm_region != victim.shm_region and {victim.shm_region, new.shm_region} <= s.shm_regions
        # What the stop has to clean up: Triton still holds the dead instance's region after the restore.
        assert victim.shm_region in shm_regions()
        assert f"/dev/shm/{victim.shm_region}" in Path(f"/proc/{s.process.pid}/maps").read_text()
    finally:
        supervisor.drain_and_stop()
    assert_only_its_regions_removed(s, before, foreign_region)
    assert victim.shm_region in s.removed_regions
    assert not s.group_alive()


@pytest.mark.unit
def test_a_region_some_process_still_maps_is_never_removed(foreign_region):
    """A recorded region that a live process holds (another server's stub, say) stays; once free it goes."""
    name = foreign_region
    holder = subprocess.Popen(
        [sys.executable, "-c", "import mmap, sys, time; f = open(sys.argv[1], 'r+b'); m = mmap.mmap(f.fileno(), 0); "
         "f.close(); print('mapped', flush=True); time.sleep(60)", f"/dev/shm/{name}"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "mapped"
        assert remove_shm_regions({name}) == [] and name in shm_regions()
    finally:
        holder.kill()
        holder.wait()
    assert remove_shm_regions({name, "not_a_triton_region"}) == [name] and name not in shm_regions()


def test_restricted_apis_need_the_key(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        c.get_model_repository_index()
    index = c.get_model_repository_index(headers=server.restricted_headers("grpc"), as_json=True)
    assert any(m["name"] == "minilm" for m in index["models"])
    assert c.is_server_ready()  # inference and health stay open


def test_servers_bind_loopback_only(server):
    assert server.grpc_url.startswith("127.0.0.1:")
    assert "--http-address=127.0.0.1" in server.command() and "--model-control-mode=explicit" in server.command()


@pytest.mark.unit
def test_huge_pages_tunable_joins_the_operators_and_yields_to_their_choice():
    from tritonize.server.memory import with_huge_pages

    assert with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_the_server_and_every_stub_run_with_huge_pages(server):
    """ServerConfig.huge_pages (the default): tritonserver starts with the tunable and its stubs inherit
    it; where the kernel offers THP (`madvise` or `always`), the stubs hold huge pages."""
    from benchmarks.investigations.huge_pages_bench import anon_huge_kb
    from tritonize.server.stubs import stubs_of

    stubs = [s.pid for s in stubs_of(server.process.pid)]
    assert stubs
    for pid in [server.process.pid, *stubs]:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert any(e.startswith(b"GLIBC_TUNABLES=") and b"glibc.malloc.hugetlb=1" in e for e in environ), pid
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():
        assert sum(anon_huge_kb(pid) for pid in stubs) > 0


@pytest.mark.unit
def test_writer_emits_parseable_configs_for_both_flavours():
    from google.protobuf import text_format

    from tritonize.converters.encoders.repository import EncoderPipeline, ensemble_config, model_config, tokenizer_config
    from tritonize.converters.repository import render

    for flavour in ("python", "native"):
        p = EncoderPipeline("m", "classification", 32, 64, 0, labels=["a", "b"], flavour=flavour,
                            graph_inputs=["input_ids", "attention_mask", "token_type_ids"])
        for config in (tokenizer_config(p), model_config(p), ensemble_config(p)):
            parsed = text_format.Parse(render(config), mc.ModelConfig())
            assert parsed == config
        native = model_config(p)
        if flavour == "native":
            assert native.platform == "onnxruntime_onnx" and native.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
            assert [i.name for i in native.input] == ["input_ids", "attention_mask", "token_type_ids"]
            assert tokenizer_config(p).parameters["pad_to_multiple_of"].string_value == "16"
        else:
            assert all(i.allow_ragged_batch for i in native.input)
