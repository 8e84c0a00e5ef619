"""The runtime's pure parts: length buckets, padding, text decoding, pooling."""

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonize.runtime.buckets import plan_buckets
from tritonize.runtime.pooling import l2_normalize, mean_pool, softmax
from tritonize.runtime.text_inputs import decode_texts, pad_rows
from tritonize.runtime.triton import METRICS_SETTLE_S, InputError, _Outbox

pytestmark = pytest.mark.unit  # the fast tier: no server, no conversion


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 256), min_size=1, max_size=200), st.sampled_from([1.0, 1.1, 1.25, 2.0]), st.integers(1, 64),
       st.sampled_from([0, 4, 8]))
def test_buckets_cover_every_row_once_and_bound_padding(lengths, ratio, max_rows, min_pad):
    lengths = np.array(lengths)
    buckets = plan_buckets(lengths, ratio, max_rows, min_pad)
    rows = np.concatenate(buckets)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for b in buckets:
        assert 1 <= len(b) <= max_rows
        if len(b) > 1:
            real = lengths[b].sum()
            assert len(b) * lengths[b].max() <= max(ratio * real, real + min_pad * len(b)) + 1e-9


def test_similar_lengths_share_a_bucket():
    buckets = plan_buckets(np.array([10, 64, 9, 63, 11, 62]), 1.25, 64)
    assert sorted(sorted(b.tolist()) for b in buckets) == [[0, 2, 4], [1, 3, 5]]
    # short rows: a few padding tokens each are cheaper than one more engine call
    assert len(plan_buckets(np.array([4, 12, 8, 10]), 1.25, 64, min_padding_tokens=0)) == 2
    assert len(plan_buckets(np.array([4, 12, 8, 10]), 1.25, 64, min_padding_tokens=8)) == 1


def _cost(buckets, lengths, call_tokens):
    return sum(call_tokens + len(b) * lengths[b].max() for b in buckets)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 128), min_size=1, max_size=64), st.integers(1, 64), st.sampled_from([4, 8, 16]))
def test_priced_buckets_never_cost_more_than_growing_from_the_longest(lengths, max_rows, call_tokens):
    """With a call cost, the chosen split is the cheapest (calls x cost + padded tokens) within the bound:
    never dearer than the greedy split, which also keeps the bound."""
    from tritonize.runtime.buckets import _greedy

    lengths = np.array(lengths)
    chosen = plan_buckets(lengths, 1.25, max_rows, call_tokens)
    greedy = _greedy(lengths, np.argsort(-lengths, kind="stable"), 1.25, max_rows, call_tokens)
    assert _cost(chosen, lengths, call_tokens) <= _cost(greedy, lengths, call_tokens)


def test_priced_buckets_split_where_padding_costs_more_than_a_call():
    lengths = np.array([40, 33, 33, 33, 12, 11, 10, 9])
    # Grown from the longest, 40 takes the 33s in (within 1.25x): 4 x 40 + 4 x 12 = 208 tokens, 2 calls.
    # Cheapest at 8 tokens a call: [40] [33 x3] [12 11 10 9] = 40 + 99 + 48 + 3 x 8 = 211 < 208 + 16 = 224.
    buckets = plan_buckets(lengths, 1.25, 64, min_padding_tokens=8)
    assert [sorted(lengths[b].tolist(), reverse=True) for b in buckets] == [[40], [33, 33, 33], [12, 11, 10, 9]]


def test_pad_rows_pads_to_longest_or_multiple():
    ids, mask = pad_rows([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, _ = pad_rows([[1, 2, 3]], pad_id=9, multiple_of=16)
    assert pad_rows([[1] * 60], pad_id=0, multiple_of=16, max_length=62)[0].shape == (1, 62)  # never past the model's length
    assert ids.shape == (1, 16) and ids[0, 3] == 9


def test_decode_texts_errors_name_the_field_and_limit():
    ok = decode_texts(np.array([[b"a"], ["b"]], dtype=object), 10)
    assert ok == ["a", "b"]
    with pytest.raises(InputError, match=r"TEXT has no rows"):
        decode_texts(np.zeros((0, 1), dtype=object), 10)
    with pytest.raises(InputError, match=r"TEXT\[0\] is 11 bytes; the limit is 10 bytes"):
        decode_texts(np.array([[b"x" * 11]], dtype=object), 10)
    with pytest.raises(InputError, match=r"shape \[rows, 1\]"):
        decode_texts(np.array([b"a", b"b"], dtype=object), 10)


def test_mean_pool_ignores_padding_and_normalises():
    tokens = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]], dtype=np.float32)
    pooled = mean_pool(tokens, np.array([[1, 1, 0]]))
    assert pooled.tolist() == [[2.0, 0.0]]
    assert l2_normalize(pooled).tolist() == [[1.0, 0.0]]
    np.testing.assert_allclose(softmax(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]])


class SentMetric:
    """Stands in for a Counter/Gauge: records what the flush thread sends (the real ones go to Triton)."""

    def __init__(self):
        self.sent: list[tuple[float, str]] = []

    def send(self, value: float) -> None:
        self.sent.append((value, threading.current_thread().name))


def test_metric_updates_leave_the_request_path_summed_and_land_within_the_settle_time():
    outbox = _Outbox()
    counter, gauge = SentMetric(), SentMetric()
    for _ in range(100):
        outbox.add(counter, 2.0)
    for v in (5.0, 3.0, 1.0):
        outbox.set(gauge, v)
    assert counter.sent == [] and gauge.sent == []  # nothing sent by the caller itself
    time.sleep(METRICS_SETTLE_S)
    assert [v for v, _ in counter.sent] == [200.0] and [v for v, _ in gauge.sent] == [1.0]  # one round trip each
    assert {t for _, t in counter.sent + gauge.sent} == {"tritonize-metrics"}
    outbox.add(counter, 1.0)  # later updates go out on a later flush
    time.sleep(METRICS_SETTLE_S)
    assert [v for v, _ in counter.sent] == [200.0, 1.0]
