"""The speech front end's pure parts, and its encoding against Hugging Face's VitsTokenizer."""

import pytest

from tritonize.runtime.speech.frontend import SpeechFrontend
from tritonize.runtime.speech.text import normalize_english, number_words, ordinal_words, split_sentences
from tritonize.runtime.triton import InputError


@pytest.mark.unit
def test_numbers_and_abbreviations_are_spelled_out():
    assert number_words(0) == "zero" and number_words(21) == "twenty one"
    assert number_words(1_234_567) == "one million two hundred thirty four thousand five hundred sixty seven"
    assert ordinal_words(1) == "first" and ordinal_words(22) == "twenty second" and ordinal_words(40) == "fortieth"
    assert normalize_english("Dr. Who paid $5.50 for 2 tickets, 1st row; 50% off & more") == (
        "doctor Who paid five dollars and fifty cents for two tickets, first row; fifty percent off and more")
    assert normalize_english("It costs 1,000 today") == "It costs one thousand today"


@pytest.mark.unit
def test_sentences_split_at_punctuation_and_length():
    assert split_sentences("One. Two! Three? Four; five", 100) == ["One.", "Two!", "Three?", "Four;", "five"]
    long = "word " * 100
    parts = split_sentences(long, 60)
    assert all(len(p) <= 60 for p in parts) and " ".join(parts).split() == long.split()


def test_frontend_encodes_like_vits_tokenizer(built):
    from transformers import AutoTokenizer

    from tritonize.converters.speech.vits import frontend_spec
    from transformers import VitsConfig

    path = built["tiny_vits"]
    tok = AutoTokenizer.from_pretrained(path)
    spec = frontend_spec(tok, VitsConfig.from_pretrained(path))
    fe = SpeechFrontend(spec, {"max_sentence_chars": 300, "max_sentences": 10, "max_text_bytes": 1000})
    for sentence in ("Hello World", "it's a test, isn't it", "ÜBER cool 123"):
        assert fe.tokens(sentence) == tok(sentence)["input_ids"]
    with pytest.raises(InputError, match="the limit is 10 per request"):
        fe.sentences("a. " * 11)
