"""The GPT-2 graph edit that returns only each step's new cache columns (converters/generation/append_cache.py)
and the engine's buffers with spare columns (runtime/generation/cache.py: RowBatch.append): the same
attention as the graph before it on real ONNX Runtime sessions, with or without masked spare columns; a
graph off the pattern is left alone; the served tiny GPT-2 carries the edit (its greedy ids equal Hugging
Face's in tests/generation/test_served.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tritonize.converters.generation.append_cache import split_cache_attention
from tritonize.runtime.generation.cache import CacheSlot, RowBatch

pytestmark = pytest.mark.unit  # the fast tier: no server, no conversion

B, H, T, D = 2, 3, 6, 4
NEG = -1e9


def attention_graph(path: Path, value_read_elsewhere: bool = False) -> None:
    """One layer as Optimum exports it after key_transpose.py: present = Concat(past, new) for K and V;
    masked softmax(q K^T) V; the key length read through Shape (as the causal-mask slice does)."""
    f = lambda n, shape: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)  # noqa: E731
    k, v = "past_key_values.0.key", "past_key_values.0.value"
    nodes = [
        helper.make_node("Concat", [k, "k_new"], ["present.0.key"], axis=2),
        helper.make_node("Concat", [v, "v_new"], ["present.0.value"], axis=2),
        helper.make_node("FusedMatMul", ["q", "present.0.key"], ["scores"], domain="com.microsoft", transB=1, alpha=0.5),
        helper.make_node("Shape", ["present.0.key"], ["present_shape"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", "present.0.value"], ["out"]),
    ]
    outputs = [f("out", None), f("present.0.key", None), f("present.0.value", None),
               helper.make_tensor_value_info("present_shape", TensorProto.INT64, [4])]
    if value_read_elsewhere:
        nodes.append(helper.make_node("ReduceSum", ["present.0.value"], ["elsewhere"]))
        outputs.append(f("elsewhere", None))
    inputs = [f(k, [B, H, None, D]), f(v, [B, H, None, D]), f("q", [B, H, 1, D]), f("k_new", [B, H, 1, D]),
              f("v_new", [B, H, 1, D]), f("bias", [B, 1, 1, None])]
    graph = helper.make_graph(nodes, "attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(path))


def run(path: Path, feed: dict) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def feed(rng, past: int, spare: int = 0) -> dict:
    cache = lambda: np.concatenate([rng.standard_normal((B, H, past, D), np.float32), np.full((B, H, spare, D), 7, np.float32)], axis=2)  # noqa: E731
    bias = np.zeros((B, 1, 1, past + spare + 1), np.float32)
    bias[..., past : past + spare] = NEG  # spare columns masked, as the engine masks them
    return {"past_key_values.0.key": cache(), "past_key_values.0.value": cache(), "bias": bias,
            **{n: rng.standard_normal((B, H, 1, D), np.float32) for n in ("q", "k_new", "v_new")}}


@pytest.mark.parametrize("past", [0, T])  # 0: the prompt forward, whose cache is empty
def test_split_attention_equals_the_concatenated_one(tmp_path, past):
    rng = np.random.default_rng(past)
    path = tmp_path / "attention.onnx"
    attention_graph(path)
    x = feed(rng, past)
    before = run(path, x)
    assert split_cache_attention(path) == 1
    graph = onnx.load(str(path)).graph
    assert "Concat" not in [n.op_type for n in graph.node if n.output[0].startswith("present")]
    after = run(path, x)
    np.testing.assert_allclose(after["out"], before["out"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after["present_shape"], before["present_shape"])
    # the outputs are the new columns only, under their own names
    np.testing.assert_array_equal(after["new_key_values.0.key"], before["present.0.key"][:, :, past:])
    np.testing.assert_array_equal(after["new_key_values.0.value"], before["present.0.value"][:, :, past:])


def test_masked_spare_columns_change_nothing(tmp_path):
    path = tmp_path / "attention.onnx"
    attention_graph(path)
    split_cache_attention(path)
    tight, roomy = feed(np.random.default_rng(1), T), feed(np.random.default_rng(1), T, spare=3)
    np.testing.assert_allclose(run(path, roomy)["out"], run(path, tight)["out"], rtol=1e-5, atol=1e-6)


def test_a_cache_read_elsewhere_is_left_alone(tmp_path):
    path = tmp_path / "attention.onnx"
    attention_graph(path, value_read_elsewhere=True)
    original = path.read_bytes()
    assert split_cache_attention(path) == 0
    assert path.read_bytes() == original


def test_row_batch_appends_in_place_and_grows_like_the_copying_batch():
    """Two sequences of different lengths, four steps with 2 spare columns (so the buffers grow once): the
    cache columns in use and the mask equal the batch that takes the whole cache back each step."""
    rng = np.random.default_rng(0)

    def slots():
        r = np.random.default_rng(1)
        return {m: CacheSlot(own=[r.standard_normal((1, H, n, D), np.float32)], cached=n) for m, n in ((1, 3), (2, 5))}

    copying, appending = slots(), slots()
    a, b = RowBatch([1, 2], copying), RowBatch([1, 2], appending, spare=2)
    assert b.capacity == 7 and a.capacity == 5
    for _ in range(4):
        new = rng.standard_normal((2, H, 1, D), np.float32)
        _, mask_a, _ = a.inputs({1: 0, 2: 0}, copying)
        _, mask_b, _ = b.inputs({1: 0, 2: 0}, appending)
        assert mask_b.shape[1] == b.capacity + 1 and (mask_b[:, b.width : -1] == 0).all()  # spare columns masked
        np.testing.assert_array_equal(np.delete(mask_b, np.s_[b.width : -1], axis=1), mask_a)
        a.advance([np.concatenate([a.past[0], new], axis=2)], mask_a, copying)
        b.append([new], appending)
        np.testing.assert_array_equal(b.past[0][:, :, : b.width], a.past[0])
    assert b.width == 9 and b.capacity == 9  # 7 columns, full after two steps, grown by 2 at the third
    assert [s.cached for s in appending.values()] == [s.cached for s in copying.values()] == [7, 9]
