"""The generator contract: one Limits for what a conversion asks and what the served step reads."""

import pytest

from tritonize.contract.generation import ChatTemplate, Generator, Limits
from tests.contract import through_config

pytestmark = pytest.mark.unit



@pytest.mark.parametrize("generator", [
    Generator("decoder", Limits(max_new_tokens=400, max_sequences=8).served(1024, True), 50256, None, ChatTemplate("{{ m }}", "<s>", "</s>")),
    Generator("encoder-decoder", Limits().served(512, False), 1, 0),
])
def test_written_parameters_read_back_as_the_same_generator(generator, tmp_path):
    params = through_config(generator.to_params(), tmp_path)
    assert params["task"] == "generation" and Generator.from_params(params) == generator


def test_served_limits_fit_the_context():
    served = Limits(max_new_tokens=512, default_max_new_tokens=32).served(16, decoder_only=True)
    assert (served.max_context, served.max_new_tokens, served.default_max_new_tokens) == (16, 15, 15)
    assert Limits().served(16, decoder_only=False).max_new_tokens == 512


@pytest.mark.parametrize("build, message", [
    (lambda: Limits(max_sequences=0), r"max_sequences must be >= 1, got 0"),
    (lambda: Limits(max_queue=-1), r"max_queue must be >= 0, got -1"),
    (lambda: Generator("encoder-only"), r"family must be one of decoder, encoder-decoder, got 'encoder-only'"),
    (lambda: Generator("encoder-decoder", Limits(max_context=8)), r"decoder_start_token_id is required"),
    (lambda: Generator("decoder"), r"max_context must be >= 1, got 0"),
])
def test_a_bad_value_names_the_field_and_the_limit(build, message):
    with pytest.raises(ValueError, match=message):
        build()
