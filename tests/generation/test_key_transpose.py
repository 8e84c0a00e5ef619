"""The GPT-2 graph edit that reads the key cache untransposed (converters/generation/key_transpose.py):
the same scores as the graph before it (real ONNX Runtime sessions), the edit leaves shared
transposes alone, and the served tiny GPT-2 carries it (its greedy ids equal Hugging Face's in
tests/generation/test_served.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tritonize.converters.generation.key_transpose import fuse_key_transposes

B, H, L, D = 3, 2, 5, 4


def scores_graph(path: Path, scaled: bool, shared: bool = False) -> None:
    """scores = (Q * s) @ (Transpose(K) * s), PyTorch's SDPA export; `shared`: the transposed K is also an output."""
    f = lambda n, shape: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)  # noqa: E731
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
    init = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])]
    if scaled:
        nodes += [helper.make_node("Mul", ["q", "s"], ["qs"]), helper.make_node("Mul", ["kt", "s"], ["kts"]),
                  helper.make_node("MatMul", ["qs", "kts"], ["scores"])]
    else:
        nodes += [helper.make_node("MatMul", ["q", "kt"], ["scores"])]
    outputs = [f("scores", [B, H, 1, L])] + ([f("kt", [B, H, D, L])] if shared else [])
    graph = helper.make_graph(nodes, "scores", [f("q", [B, H, 1, D]), f("k", [B, H, L, D])], outputs, init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run(path: Path, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["scores"], {"q": q, "k": k})[0]


@pytest.mark.unit
@pytest.mark.parametrize("scaled", [True, False])
def test_rewritten_scores_equal_the_original_graph(tmp_path, scaled):
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((B, H, 1, D), np.float32), rng.standard_normal((B, H, L, D), np.float32)
    path = tmp_path / "scores.onnx"
    scores_graph(path, scaled)
    before = run(path, q, k)
    assert fuse_key_transposes(path) == 1
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Transpose" not in ops and "FusedMatMul" in ops
    np.testing.assert_allclose(run(path, q, k), before, rtol=1e-6, atol=1e-6)


@pytest.mark.unit
def test_a_transpose_read_elsewhere_is_left_alone(tmp_path):
    path = tmp_path / "shared.onnx"
    scores_graph(path, scaled=True, shared=True)
    original = path.read_bytes()
    assert fuse_key_transposes(path) == 0
    assert path.read_bytes() == original


def test_the_served_gpt2_graph_reads_every_layers_key_cache_untransposed(built):
    from tests.tiny_generators import GPT2
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(built["tiny_gpt2"]).n_layer
    graph = onnx.load(str(built["repository"] / GPT2 / "1" / "model.onnx"), load_external_data=False).graph
    fused = [n for n in graph.node if n.op_type == "FusedMatMul"]
    # two per layer since append_cache.py splits the scores: against the cache, against the new key
    assert len(fused) == 2 * layers and sum(n.input[1].startswith("past_key_values.") for n in fused) == layers
    swaps = [n for n in graph.node if n.op_type == "Transpose" and list(n.attribute[0].ints) == [0, 1, 3, 2]]
    assert not swaps
