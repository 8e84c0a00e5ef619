"""The speech contract: the voice's parameters (every step) and the synthesis step's."""

import pytest

from tritonize.contract.speech import Speech, SpeechLimits, Synthesis
from tests.contract import through_config

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", [Speech(22050, SpeechLimits(max_sentences=10, max_audio_seconds=30.0), 6), Synthesis(4, 1.5, 2)])
def test_written_parameters_read_back_as_the_same_dataclass(value, tmp_path):
    assert type(value).from_params(through_config(value.to_params(), tmp_path)) == value


def test_voices_converted_before_the_audio_limit_get_its_default():
    old = Speech.from_params({"sampling_rate": "16000", "limits": '{"max_text_bytes": 10, "max_sentence_chars": 5, "max_sentences": 2, "pause_ms": 0}'})
    assert old.limits.max_audio_seconds == 600.0 and old.pause_samples == 0


@pytest.mark.parametrize("build, message", [
    (lambda: SpeechLimits(max_audio_seconds=0), r"max_audio_seconds must be > 0, got 0"),
    (lambda: Speech(16000, min_tokens=0), r"min_tokens must be >= 1, got 0"),
    (lambda: Synthesis(max_rows_per_run=0), r"max_rows_per_run must be >= 1, got 0"),
])
def test_a_bad_value_names_the_field_and_the_limit(build, message):
    with pytest.raises(ValueError, match=message):
        build()
