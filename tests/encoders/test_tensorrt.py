"""TensorRT: the bucket plan behind the optimisation profiles, the tensorrt_plan step's configs (parsed
back with model_config_pb2), the fp16 graph conversion, and the engine build (only on a GPU with TensorRT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from tritonize.converters.encoders.repository import (
    EncoderPipeline, ensemble_config, model_config, postprocess_config, tokenizer_config,
)
from tritonize.converters.encoders.tensorrt import (
    SPEC_FILE, BuildSpec, EngineBuildError, builder_unavailable, derive_profiles, length_buckets, prepare_engines,
)
from tritonize.converters.repository import Batching, render

NO_BUILDER = builder_unavailable()


@pytest.mark.unit
def test_buckets_double_from_the_padding_multiple_up_to_the_model_length():
    assert length_buckets(512) == [16, 32, 64, 128, 256, 512]
    assert length_buckets(256) == [16, 32, 64, 128, 256]
    assert length_buckets(130) == [16, 32, 64, 130]  # a 2-token last bucket is merged into the one before
    assert length_buckets(100) == [16, 32, 64, 100]
    assert length_buckets(16) == [16] and length_buckets(10) == [10]


@pytest.mark.unit
def test_profiles_cover_each_padded_length_exactly_once():
    profiles = derive_profiles(max_length=512, max_batch_size=64)
    assert len(profiles) == 6
    assert profiles[0].min == (1, 1) and profiles[0].opt == profiles[0].max == (64, 16)
    assert profiles[-1].min == (1, 257) and profiles[-1].max == (64, 512)
    for length in range(16, 513, 16):  # the native tokenizer pads to multiples of 16
        assert sum(p.min[1] <= length <= p.max[1] for p in profiles) == 1, length


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4096), st.integers(1, 256))
def test_profiles_partition_one_to_max_length(max_length, max_batch_size):
    profiles = derive_profiles(max_length, max_batch_size)
    assert profiles[0].min[1] == 1 and profiles[-1].max[1] == max_length
    for a, b in zip(profiles, profiles[1:]):
        assert b.min[1] == a.max[1] + 1
    for p in profiles:
        assert p.min[0] == 1 and p.opt[0] == p.max[0] == max_batch_size
        assert p.min[1] <= p.opt[1] == p.max[1]
        # a bucket at most doubles the one before it, or 1.5x that where a narrow last bucket was merged in
        assert p.max[1] < 3 * max(p.min[1] - 1, 8)


@pytest.mark.parametrize("kw, field", [({"max_length": 0, "max_batch_size": 8}, "max_length"),
                                      ({"max_length": 64, "max_batch_size": 0}, "max_batch_size")])
@pytest.mark.unit
def test_bad_bucket_inputs_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        derive_profiles(**kw)


def pipeline(**kw) -> EncoderPipeline:
    base = dict(name="enc", task="embedding", hidden_size=32, max_length=128, pad_token_id=0,
                graph_inputs=["input_ids", "attention_mask", "token_type_ids"], batching=Batching(max_batch_size=16, instance_count=2))
    return EncoderPipeline(**(base | kw))


@pytest.mark.parametrize("flavour, engine", [("python", "onnxruntime"), ("native", "onnxruntime"), ("native", "tensorrt")])
@pytest.mark.parametrize("task", ["embedding", "classification"])
def test_every_config_round_trips_through_model_config_pb2(flavour, engine, task):
    p = pipeline(flavour=flavour, engine=engine, task=task, labels=["a", "b"] if task == "classification" else [])
    for build in (tokenizer_config, model_config, postprocess_config, ensemble_config):
        config = build(p)
        text = render(config)
        parsed = text_format.Parse(text, mc.ModelConfig())
        assert parsed == config and render(parsed) == text


@pytest.mark.unit
def test_tensorrt_step_lists_every_profile_for_every_instance():
    p = pipeline(flavour="native", engine="tensorrt")
    config = model_config(p)
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
    assert [i.name for i in config.input] == p.graph_inputs and all(i.data_type == mc.TYPE_INT64 for i in config.input)
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 2
    assert list(group.profile) == ["0", "1", "2", "3"]  # buckets 16, 32, 64, 128
    assert [w.name for w in config.model_warmup] == ["16_tokens", "32_tokens", "64_tokens", "128_tokens"]
    assert all(set(w.inputs) == set(p.graph_inputs) for w in config.model_warmup)


@pytest.mark.unit
def test_tensorrt_needs_the_native_flavour():
    with pytest.raises(ValueError, match="needs flavour 'native'"):
        from tritonize.converters.encoders.repository import check_engine
        check_engine("python", "tensorrt")


@pytest.fixture(scope="module")
def tensorrt_repo(tmp_path_factory):
    """`tritonize convert bert --flavour native --engine tensorrt` on a tiny BERT classifier."""
    from tests.tiny_models import build_tiny_bert_classifier
    from tritonize.cli import app

    work = tmp_path_factory.mktemp("trt")
    checkpoint = build_tiny_bert_classifier(work / "ckpt")
    repo = work / "repo"
    r = CliRunner().invoke(app, ["convert", "bert", "--model", str(checkpoint), "--task", "classification", "--name", "tiny",
                                 "-r", str(repo), "--flavour", "native", "--engine", "tensorrt", "--max-batch-size", "8"])
    assert r.exit_code == 0, r.output
    return repo


def test_conversion_writes_the_graph_and_build_spec_not_a_plan(tensorrt_repo):
    import onnx

    step = tensorrt_repo / "tiny_model"
    config = text_format.Parse((step / "config.pbtxt").read_text(), mc.ModelConfig())
    spec = BuildSpec.load(step / "1" / SPEC_FILE)
    assert spec.precision == "fp16" and spec.profiles == derive_profiles(64, 8)  # the tiny model's max length is 64
    assert len(config.instance_group[0].profile) == len(spec.profiles) == 3
    assert not (step / "1" / "model.plan").exists()  # built on the serving GPU, not here

    graph = onnx.load(str(step / "1" / spec.onnx)).graph
    assert [i.name for i in graph.input] == spec.inputs == [i.name for i in config.input]
    assert [o.name for o in graph.output] == [o.name for o in config.output] == ["logits"]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 at the edges
    weights = {onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer if len(t.dims) == 2}
    assert weights == {"FLOAT16"}  # fp16 inside
    for w in config.model_warmup:  # each warmup file holds one row of its bucket's length
        (tensor,) = {v.input_data_file: v for v in w.inputs.values()}.values()
        assert (step / "warmup" / tensor.input_data_file).stat().st_size == tensor.dims[0] * 8
    manifest = json.loads((tensorrt_repo / "tiny" / "tritonize.json").read_text())
    assert manifest["pipeline"]["engine"] == "tensorrt" and 0 < manifest["report"]["fp16_relative_error"] <= 1e-2
    for path in tensorrt_repo.glob("*/config.pbtxt"):  # every generated config parses
        text_format.Parse(path.read_text(), mc.ModelConfig())


def test_the_fp16_graph_matches_fp32_on_cpu(tensorrt_repo, tmp_path):
    """What TensorRT will build computes what the fp32 export computes (ONNX Runtime, CPU)."""
    import onnxruntime as ort

    graph = tensorrt_repo / "tiny_model" / "1" / "model.onnx"
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (3, 20)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    out = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert out.dtype == np.float32 and out.shape == (3, 3) and np.isfinite(out).all()
    assert np.ptp(out, axis=0).max() > 1e-3  # logits vary with the input


@pytest.mark.parametrize("extra, message", [(["--flavour", "python"], "needs flavour 'native'"),
                                            (["--flavour", "native", "--quantize"], "TensorRT cannot parse"),
                                            (["--flavour", "native", "--precision", "int4"], "precision must be one of")])
@pytest.mark.unit
def test_bad_engine_options_fail_clearly_and_write_nothing(tmp_path, extra, message):
    from tritonize.cli import app

    r = CliRunner().invoke(app, ["convert", "bert", "--model", str(tmp_path / "absent"), "-r", str(tmp_path / "repo"),
                                 "--engine", "tensorrt", *extra])
    assert r.exit_code == 1 and "".join(message.split()) in "".join(r.output.split())
    assert not (tmp_path / "repo").exists()


@pytest.mark.unit
def test_a_repository_without_tensorrt_steps_needs_no_build(tmp_path):
    assert prepare_engines(tmp_path, tmp_path / "cache") == []
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(NO_BUILDER is None, reason="this machine can build engines: test_engine_builds_on_this_gpu covers it")
def test_without_a_builder_serve_refuses_clearly_and_builds_nothing(tensorrt_repo, tmp_path):
    from tritonize.cli import app

    with pytest.raises(EngineBuildError, match=r"tiny_model: a TensorRT engine must be built on this machine's GPU"):
        prepare_engines(tensorrt_repo, tmp_path / "cache")
    r = CliRunner().invoke(app, ["serve", "-r", str(tensorrt_repo), "--engine-cache", str(tmp_path / "cache")])
    assert r.exit_code == 1 and "tiny_model" in r.output
    assert not (tmp_path / "cache").exists() and not (tensorrt_repo / "tiny_model" / "1" / "model.plan").exists()


@pytest.mark.skipif(NO_BUILDER is not None, reason=f"TensorRT engine build: {NO_BUILDER}")
def test_engine_builds_on_this_gpu_with_one_profile_per_bucket(tensorrt_repo, tmp_path):
    import tensorrt as trt

    (link,) = prepare_engines(tensorrt_repo, tmp_path / "cache")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(link.read_bytes())
    assert engine.num_optimization_profiles == len(BuildSpec.load(link.parent / SPEC_FILE).profiles)
    built = sorted((tmp_path / "cache").rglob("model.plan"))
    link.unlink()  # a fresh container: the cache is reused, nothing is rebuilt
    (again,) = prepare_engines(tensorrt_repo, tmp_path / "cache")
    assert again.resolve() == built[0] and sorted((tmp_path / "cache").rglob("model.plan")) == built
