"""The PyTorch engine's own contract: where it runs and what it stores, the device errors (at conversion
and at load), the out-of-memory path, and reduced precision on CPU. The served parity, batching,
streaming and bad-input tests run on both engines in the family test modules."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.conftest import EMBEDDER
from tests.torch_models import CLASSIFIER_TORCH, EMBEDDER_TORCH, GPT2_TORCH, T5_TORCH, VOICE_TORCH
from tritonize.converters.device import DeviceError, Placement
from tritonize.runtime.engines import EngineSpec

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="these check the errors on a machine without a CUDA device")


def config(built, model: str) -> mc.ModelConfig:
    return text_format.Parse((built["repository"] / model / "config.pbtxt").read_text(), mc.ModelConfig())


@pytest.mark.unit
def test_placement_and_engine_spec_name_the_field_and_the_choices():
    with pytest.raises(DeviceError, match=r"--device must be one of cpu, cuda .* got 'tpu'"):
        Placement("tpu")
    with pytest.raises(DeviceError, match=r"--dtype must be one of float32, float16, bfloat16, got 'fp8'"):
        Placement("cuda", "fp8")
    with pytest.raises(DeviceError, match=r"--dtype float16 needs the PyTorch engine"):
        Placement(None, "float16")
    with pytest.raises(ValueError, match=r"parameter device must be one of cpu, cuda, got 'gpu'"):
        EngineSpec("torch", "gpu")
    with pytest.raises(ValueError, match=r"the ONNX Runtime engine runs float32 on cpu, not float16 on cuda"):
        EngineSpec("onnx", "cuda", "float16")


@pytest.mark.parametrize("model, step", [(EMBEDDER_TORCH, f"{EMBEDDER_TORCH}_model"), (GPT2_TORCH, GPT2_TORCH), (T5_TORCH, T5_TORCH),
                                         (VOICE_TORCH, f"{VOICE_TORCH}_model"), (VOICE_TORCH, f"{VOICE_TORCH}_stream")])
def test_the_step_stores_weights_config_and_tokenizer_and_runs_torch_on_cpu(built, model, step):
    c = config(built, step)
    params = {k: v.string_value for k, v in c.parameters.items()}
    assert (params["engine"], params["device"], params["dtype"]) == ("torch", "cpu", "float32")
    assert [(g.kind, g.count) for g in c.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    stored = {p.name for p in (built["repository"] / step / "1" / "torch").iterdir()}
    assert {"config.json", "model.safetensors"} <= stored and stored & {"tokenizer.json", "vocab.json"}
    assert not list((built["repository"] / step / "1").glob("*.onnx"))
    report = (built["repository"] / model / "tritonize.json").read_text()
    assert '"engine": "torch"' in report and '"device": "cpu"' in report


@pytest.mark.unit
def test_a_cuda_repository_asks_for_one_instance_on_each_gpu():
    from tritonize.converters.encoders.repository import EncoderPipeline, model_config
    from tritonize.converters.speech.repository import SpeechPipeline, stream_config

    c = model_config(EncoderPipeline("e", "embedding", 32, 64, 0, device="cuda", dtype="float16"))
    parsed = text_format.Parse(text_format.MessageToString(c), mc.ModelConfig())
    assert parsed == c and [(g.kind, g.count, list(g.gpus)) for g in parsed.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 1, [])]
    assert {k: v.string_value for k, v in parsed.parameters.items()}.items() >= {"engine": "torch", "device": "cuda", "dtype": "float16"}.items()
    s = stream_config(SpeechPipeline("v", 16000, device="cuda"))
    assert s.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    onnx = model_config(EncoderPipeline("e", "embedding", 32, 64, 0))
    assert onnx.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and "engine" not in onnx.parameters


@NO_GPU
@pytest.mark.parametrize("family, extra", [("bert", ["--task", "embedding"]), ("gpt2", []), ("t5", []), ("tts", [])])
def test_convert_with_device_cuda_and_no_gpu_fails_naming_the_device(built, tmp_path, family, extra):
    from typer.testing import CliRunner

    from tritonize.cli import app

    r = CliRunner().invoke(app, ["convert", family, "--model", str(built["repository"]), *extra, "--device", "cuda", "-r", str(tmp_path / "repo")])
    text = " ".join(r.output.split())
    assert r.exit_code == 1 and "--device cuda: no CUDA device is visible here" in text, r.output
    assert not (tmp_path / "repo").exists()  # failed before any work


@NO_GPU
@pytest.mark.parametrize("step", [f"{EMBEDDER_TORCH}_model", GPT2_TORCH, f"{VOICE_TORCH}_model"])
def test_loading_a_cuda_step_without_a_gpu_fails_naming_the_device(built, step):
    from tritonize.runtime.engine_torch import DeviceUnavailable

    folder = built["repository"] / step / "1"
    params = {k: v.string_value for k, v in config(built, step).parameters.items()} | {"device": "cuda"}
    with pytest.raises(DeviceUnavailable, match=r"device 'cuda' is configured \(parameter device\), but no CUDA device is visible"):
        if step == f"{EMBEDDER_TORCH}_model":
            from tritonize.runtime.encoders.encoder import load_engine

            load_engine(folder, "last_hidden_state", EngineSpec.from_params(params))
        elif step == GPT2_TORCH:
            from tritonize.runtime.generation.models import load_model

            load_model(folder, params)
        else:
            from tritonize.runtime.speech.synthesis import load_engine

            load_engine(folder, params)


@pytest.mark.unit
def test_gpu_out_of_memory_fails_that_batch_only_with_a_clear_error():
    """The real exception type CUDA raises; the guard frees the cache and the next batch runs (on a GPU
    the allocation itself fails; this machine has none, so the exception is raised by hand)."""
    from tritonize.runtime.engine_torch import OutOfMemory, guard_oom

    with pytest.raises(OutOfMemory, match=r"GPU out of memory on cuda:0 for 64 rows x 512 tokens; this batch failed and the model keeps serving \(CUDA out of memory\. Tried"):
        with guard_oom("on cuda:0 for 64 rows x 512 tokens"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    with guard_oom("on cuda:0 for 1 rows x 8 tokens"):
        assert torch.ones(2).sum() == 2


def test_reduced_precision_on_cpu_keeps_the_stated_tolerances(built):
    """bfloat16 on CPU (float16 is the GPU's): embedding cosine >= 0.999 to float32, classification argmax identical."""
    from tritonize.runtime.encoders.encoder import load_engine
    from tritonize.runtime.pooling import l2_normalize, mean_pool

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (6, 24))
    mask = np.ones_like(ids)
    mask[3, 10:] = 0
    ids[:, 0], ids[3, 10:] = 101, 0
    folder = built["repository"] / f"{EMBEDDER_TORCH}_model" / "1"
    f32, b16 = (load_engine(folder, "last_hidden_state", EngineSpec("torch", "cpu", d, 1)).run(ids, mask) for d in ("float32", "bfloat16"))
    e32, e16 = (l2_normalize(mean_pool(x, mask)) for x in (f32, b16))
    assert (e32 * e16).sum(-1).min() >= 0.999
    onnx = load_engine(built["repository"] / f"{EMBEDDER}_model" / "1", "last_hidden_state", EngineSpec(threads=1)).run(ids, mask)
    assert np.abs(onnx - f32)[mask.astype(bool)].max() <= 1e-4  # FP32_TOLERANCE of the ONNX path
    folder = built["torch_side_repository"] / f"{CLASSIFIER_TORCH}_model" / "1"
    small = rng.integers(5, 150, (8, 12))
    l32, l16 = (load_engine(folder, "logits", EngineSpec("torch", "cpu", d, 1)).run(small, np.ones_like(small)) for d in ("float32", "bfloat16"))
    assert (l32.argmax(-1) == l16.argmax(-1)).all() and np.ptp(l32, axis=0).max() > 0.1


@NO_GPU
def test_serving_a_cuda_repository_without_a_gpu_fails_at_load_naming_the_gpu(built, tmp_path):
    """The real server refuses the KIND_GPU instance before any step starts (the step's own check,
    for a CPU instance configured for cuda, is the test above)."""
    import shutil

    from tritonize.converters.repository import render
    from tritonize.server import ModelLoadError, ServerConfig, TritonServer

    shutil.copytree(built["repository"] / GPT2_TORCH, tmp_path / "repo" / GPT2_TORCH, symlinks=True)
    path = tmp_path / "repo" / GPT2_TORCH / "config.pbtxt"
    path.write_text(render(Placement("cuda").place(text_format.Parse(path.read_text(), mc.ModelConfig()))))
    with pytest.raises(ModelLoadError) as e:
        TritonServer(ServerConfig(tmp_path / "repo", http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=120)).start()
    assert "KIND_GPU but no GPUs are available" in e.value.failures[GPT2_TORCH]
