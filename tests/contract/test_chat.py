"""The chatbot contract: its settings, what it calls and the generator limits it budgets with."""

import json

import pytest

from tritonize.contract.chat import CALLS_PARAMETER, Chatbot, ChatSettings
from tests.contract import through_config

pytestmark = pytest.mark.unit

BOT = Chatbot("emb", "gen", "decoder", "bot", ChatSettings(0.25, 5), {"max_context": 512, "max_new_tokens": 400}, "faiss", workers=4)


@pytest.mark.parametrize("streaming", [False, True])
def test_written_parameters_read_back_as_the_same_chatbot(streaming, tmp_path):
    params = through_config(BOT.to_params(streaming), tmp_path)
    assert Chatbot.from_params(params) == BOT and ("task" in params) is not streaming
    assert json.loads(params[CALLS_PARAMETER]) == ["emb", "gen"]
    assert BOT.limits.max_context == 512 and BOT.limits.default_max_new_tokens == 32


@pytest.mark.parametrize("build, message", [
    (lambda: ChatSettings(threshold=1.5), r"threshold must be in \[-1, 1\] \(a cosine score\), got 1.5"),
    (lambda: ChatSettings(top_k=21), r"top_k must be between 1 and 20, got 21"),
    (lambda: Chatbot("e", "g", "decoder", "b", generator_limits={"max_context": 8}), r"generator_limits lacks max_new_tokens"),
    (lambda: Chatbot("e", "g", "decoder", "b", index="annoy"), r"index must be exact or faiss, not 'annoy'"),
])
def test_a_bad_value_names_the_field_and_the_limit(build, message):
    with pytest.raises(ValueError, match=message):
        build()
