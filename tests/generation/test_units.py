"""The runtime's generation pieces on their own: text streaming, sampling, parameter checks (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from tritonize.runtime.generation.params import Limits, SamplingParams, fit_to_context, parse
from tritonize.runtime.generation.prefill import MAX_PADDING_RATIO, MIN_PADDING_TOKENS, plan_prefill
from tritonize.runtime.generation.sampling import next_token, sample_probabilities
from tritonize.runtime.generation.text import TextStream, TokenBytes
from tritonize.runtime.triton import InputError
from tests.tiny_generators import train_byte_level_bpe, train_unigram

MIXED = "héllo wörld 日本語のテキスト 🙂 ½ ¾ the quick fox"


@pytest.fixture(scope="module")
def bpe():
    return train_byte_level_bpe()


def test_byte_level_pieces_never_split_a_character(bpe):
    ids = bpe.encode(MIXED).ids
    pieces = []
    stream = TextStream(TokenBytes(bpe))
    for i in ids:
        pieces.append(stream.push(i))
    pieces.append(stream.finish())
    assert "".join(pieces) == MIXED == bpe.decode(ids)
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces[:-1], "the tokenizer must split some character across tokens for this test to mean anything"


@pytest.mark.unit
def test_unigram_metaspace_pieces_rebuild_the_text():
    tok = train_unigram()
    text = "the quick brown fox jumps"
    ids = tok.encode(text).ids
    stream = TextStream(TokenBytes(tok))
    assert "".join([stream.push(i) for i in ids] + [stream.finish()]) == tok.decode(ids) == text


def test_an_unfinished_character_at_the_end_becomes_one_replacement(bpe):
    first_byte_of_e_acute = next(i for i in range(bpe.get_vocab_size()) if TokenBytes(bpe)[i] == b"\xc3")
    stream = TextStream(TokenBytes(bpe))
    assert stream.push(first_byte_of_e_acute) == ""
    assert stream.finish() == "\ufffd"


def test_stop_string_is_held_back_then_cut(bpe):
    ids = bpe.encode("the quick brown fox").ids
    stream = TextStream(TokenBytes(bpe), stop=("brown",))
    pieces = [stream.push(i) for i in ids if not stream.stopped]
    assert stream.stopped and "".join(pieces) + stream.finish() == "the quick "
    assert all("b" not in p for p in pieces)  # 'b', 'br', ... were held back, never sent


def test_held_back_prefix_is_released_when_it_does_not_continue_into_the_stop_string(bpe):
    stream = TextStream(TokenBytes(bpe), stop=("quiet",))
    ids = bpe.encode("the quick").ids
    text = "".join(stream.push(i) for i in ids) + stream.finish()
    assert text == "the quick" and not stream.stopped


def params(**kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=10, **kw)


@pytest.mark.unit
def test_greedy_is_argmax_and_repetition_penalty_moves_it():
    logits = np.array([1.0, 3.0, 2.9, -1.0], np.float32)
    rng = np.random.default_rng(0)
    assert next_token(logits, np.array([], np.int64), params(), rng) == 1
    assert next_token(logits, np.array([1]), params(repetition_penalty=1.5), rng) == 2


@pytest.mark.unit
def test_top_k_and_top_p_limit_the_support():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.count_nonzero(sample_probabilities(logits, params(temperature=1.0, top_k=2))) == 2
    assert np.count_nonzero(sample_probabilities(logits, params(temperature=1.0, top_p=0.7))) == 2
    assert np.count_nonzero(sample_probabilities(logits, params(temperature=1.0, top_p=0.85))) == 3
    draws = {next_token(logits, np.array([], np.int64), params(temperature=1.0, top_k=2), np.random.default_rng(s)) for s in range(50)}
    assert draws == {0, 1}


@pytest.mark.unit
def test_same_seed_same_tokens():
    logits = np.random.default_rng(1).normal(size=100).astype(np.float32)
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [next_token(logits, np.array([], np.int64), params(temperature=1.0), rng) for _ in range(20)]
    assert draw(5) == draw(5) != draw(6)


LIMITS = Limits(max_context=64, max_new_tokens=50, default_max_new_tokens=32)


@pytest.mark.unit
def test_default_max_new_tokens_shrinks_to_the_context_but_an_explicit_one_must_fit():
    p, explicit = parse({}, LIMITS)
    assert fit_to_context(p, explicit, 40, LIMITS, decoder_only=True).max_new_tokens == 24
    p, explicit = parse({"max_new_tokens": 30}, LIMITS)
    with pytest.raises(InputError, match=r"prompt \(40 tokens\) \+ max_new_tokens \(30\) exceeds the model's context of 64 tokens; ask for at most 24"):
        fit_to_context(p, explicit, 40, LIMITS, decoder_only=True)


@pytest.mark.parametrize("raw,message", [
    ({"stop": '["a", 3]'}, "stop strings must be non-empty"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
    ({"top_p": float("nan")}, "top_p must be a finite number"),
])
@pytest.mark.unit
def test_parameter_errors_name_the_field(raw, message):
    with pytest.raises(InputError, match=message):
        parse(raw, LIMITS)


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(20))
def test_prefill_plan_covers_every_prompt_within_the_token_budget_and_bounded_padding(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, rng.integers(1, 40)).tolist()
    budget = int(rng.choice([1, 64, 512, 2048]))
    groups = plan_prefill(lengths, budget, overhead_tokens=[None, 12][seed % 2])
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        width = max(lengths[i] for i in g)
        assert len(g) == 1 or len(g) * width <= budget, (g, width, budget)
        real = sum(lengths[i] for i in g)
        assert len(g) * width <= max(MAX_PADDING_RATIO * real, real + MIN_PADDING_TOKENS * len(g))
    if budget == 1:
        assert len(groups) == len(lengths)  # every prompt alone: the way to switch batched prefill off


@pytest.mark.unit
def test_similar_prompts_share_one_forward_and_a_budget_below_one_is_refused():
    assert plan_prefill([10, 12, 11, 9], 2048) == [[1, 2, 0, 3]]
    assert plan_prefill([10, 12, 11, 9], 24) == [[0, 3], [1, 2]]  # shortest forward first
    assert plan_prefill([200, 5, 6], 2048) == [[2, 1], [0]]
    # With a CPU's fixed cost of 12 tokens' worth, short prompts still share; 30-token prompts would only
    # make the first row wait for the second, so each keeps its own forward.
    assert plan_prefill([5, 5, 30, 30], 2048, overhead_tokens=12) == [[0, 1], [3], [2]]  # padding 5 tokens to 200 would waste the forward
    with pytest.raises(ValueError, match=r"max_prefill_tokens must be >= 1 \(1: every prompt in its own forward\), got 0"):
        Limits(max_context=64, max_new_tokens=8, max_prefill_tokens=0)


@pytest.mark.unit
def test_overload_names_requests_in_flight_against_the_capacity():
    """A burst arrives before the engine thread admits anyone: all of it waits, more than max_queue while
    the slots are free. The refusal counts what is limited (in flight) against the capacity."""
    from tritonize.runtime.generation.engine import Engine, Job, Tally
    from tritonize.runtime.generation.params import Overloaded

    limits = Limits(max_sequences=16, max_queue=64)
    engine = Engine(model=None, token_bytes=None, limits=limits, eos_token_id=None)  # its thread never starts
    params, _ = parse({}, limits)
    for _ in range(80):
        engine.submit(Job([1], params, sink=None))
    with pytest.raises(Overloaded) as e:
        engine.submit(Job([1], params, sink=None))
    assert str(e.value) == ("overloaded: 80 requests in flight (0 running, 80 waiting for a sequence slot); the capacity is 80 "
                            "(max_sequences=16 + max_queue=64); retry later")
    assert isinstance(engine.counters["rejected_overloaded"], Tally) and engine.counters["rejected_overloaded"].value == 1
