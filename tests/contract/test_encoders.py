"""The encoder contract: what the converter writes on each step reads back as the same dataclass, through
a real config.pbtxt; a bad value names the field and the limit."""

import pytest

from tritonize.contract.encoders import Buckets, EngineStep, Labels, Pooling, Served, Tokenizing
from tests.contract import through_config

pytestmark = pytest.mark.unit



@pytest.mark.parametrize("value", [
    Served("classification", 128), Labels(("negative", "positive")), Tokenizing(64, 1000, 1, 16, True), EngineStep.of("embedding"),
    Buckets(1, 1.5, 4, 32, 2), Pooling(False),
])
def test_written_parameters_read_back_as_the_same_dataclass(value, tmp_path):
    assert type(value).from_params(through_config(value.to_params(), tmp_path)) == value


def test_one_default_per_field_served_models_keep_eight_padding_tokens():
    assert Buckets.from_params({}) == Buckets() and Buckets().min_padding_tokens == 8
    assert Buckets().to_params()["min_padding_tokens"] == "8"


@pytest.mark.parametrize("build, message", [
    (lambda: Buckets(max_padding_ratio=0.5), r"max_padding_ratio must be >= 1.0, got 0.5"),
    (lambda: Buckets(max_rows_per_run=0), r"max_rows_per_run must be >= 1, got 0"),
    (lambda: Tokenizing(0), r"max_length must be >= 1, got 0"),
    (lambda: Served("translation", 8), r"task must be one of embedding, classification, rerank, got 'translation'"),
    (lambda: Buckets.from_params({"min_padding_tokens": "many"}), r"parameter min_padding_tokens must be int, got 'many'"),
])
def test_a_bad_value_names_the_field_and_the_limit(build, message):
    with pytest.raises(ValueError, match=message):
        build()
