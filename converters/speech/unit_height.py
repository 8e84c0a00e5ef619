"""Rewrite every 1-D Conv / ConvTranspose of an ONNX graph as its 2-D twin on a unit-height image.

Why: ONNX Runtime's CPU provider turns 4-D float Convs into NCHWc convolutions (MLAS direct kernels,
blocked channels) at ORT_ENABLE_ALL; 1-D Convs stay on im2col + SGEMM. VITS spends ~85% of its ORT
time in HiFi-GAN's Convs, so on the MMS-TTS-sized bench voice (shared 2-core machine) the rewrite took
the whole graph from 0.85x PyTorch's time to 0.55-0.7x (1 thread; tts_bench, 2 threads: 0.50-0.63x),
within the parity tolerance (2.4e-4 max abs vs PyTorch).

[batch, C, T] -> Unsqueeze(axis 2) -> Conv([1, k] kernel) -> Squeeze(axis 2) -> [batch, C, T]: the same
convolution (up to float summation order). The Unsqueeze/Squeeze pairs are cheap (0.3% of the time),
so the elementwise ops between Convs (masks, LeakyReLU, residual adds) stay as exported.

Done after this rewrite: squeeze_sinking.py (Conv + LeakyRelu fused) and time_tiles.py (threads share
one sentence's narrow Convs). Measured and left out (profile of the bench voice after the rewrite): the Pad/Slice/Where chains of the
flow and duration predictor cost <0.5% together; ConvTranspose (no NCHWc kernel) 4%; the NCHWc reorders
around the masked elementwise ops 7%; MatMul, LayerNorm and attention <0.5%, so no transformer fusions
(`optimize_model`). Spinning ORT threads: slower on a shared machine (0.88x vs 0.57x, 2 threads), so off.
Weight norm is already folded: the export's constant folding leaves every Conv weight an initializer,
which this rewrite requires (other Convs are left as they are).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONVS = ("Conv", "ConvTranspose")
_AXIS = "unit_height_axis"  # the int64 [2] both Unsqueeze and Squeeze take (opset 13+)


def _attrs_2d(node: onnx.NodeProto) -> dict:
    """The 1-D attributes with a unit height dimension in front (ONNX pads: [begins..., ends...])."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.name in ("kernel_shape", "strides", "dilations", "output_padding"):
            v = [1 if a.name != "output_padding" else 0, *v]
        elif a.name == "pads":
            v = [0, v[0], 0, v[1]]
        elif a.name == "output_shape":
            v = [1, *v]
        out[a.name] = v
    return out


def _rewrite_graph(graph: onnx.GraphProto, weights: dict[str, onnx.TensorProto]) -> int:
    """Rewrite `graph` (and its subgraphs); `weights`: the initializers visible here, by name."""
    weights = {**weights, **{t.name: t for t in graph.initializer}}
    nodes, count, made = [], 0, {}
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                count += _rewrite_graph(a.g, weights)
            elif a.type == onnx.AttributeProto.GRAPHS:
                count += sum(_rewrite_graph(g, weights) for g in a.graphs)
        w = weights.get(node.input[1]) if node.op_type in CONVS and node.domain in ("", "ai.onnx") else None
        if w is None or len(w.dims) != 3:
            nodes.append(node)
            continue
        if w.name not in made:  # a 4-D copy beside the original, which goes once nothing reads it
            w4 = onnx.TensorProto()
            w4.CopyFrom(w)
            w4.name = f"{w.name}_unit_height"
            w4.dims.insert(2, 1)  # [out, in, k] -> [out, in, 1, k]: the same bytes
            graph.initializer.append(w4)
            made[w.name] = w4.name
        count += 1
        x4, y4 = f"{node.output[0]}_unit_height_in", f"{node.output[0]}_unit_height_out"
        nodes += [
            helper.make_node("Unsqueeze", [node.input[0], _AXIS], [x4], name=f"{node.name}_unsqueeze"),
            helper.make_node(node.op_type, [x4, made[w.name], *node.input[2:]], [y4], name=node.name, **_attrs_2d(node)),
            helper.make_node("Squeeze", [y4, _AXIS], [node.output[0]], name=f"{node.name}_squeeze"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _prune_unused_initializers(graph: onnx.GraphProto, used: set[str]) -> None:
    used = used | {i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _names_read(graph: onnx.GraphProto) -> set[str]:
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                names |= _names_read(g)
    return names


def conv1d_as_conv2d(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns how many Convs were rewritten. Only Convs whose weight is an
    initializer of rank 3 are touched (anything else, e.g. a weight computed in the graph, stays 1-D)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ValueError(f"conv1d_as_conv2d needs opset >= 13 (Squeeze axes as an input); the model has opset {opset}")
    # One axes tensor in the main graph: subgraphs see it, and may not redefine its name.
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), _AXIS))
    count = _rewrite_graph(model.graph, {})
    _prune_unused_initializers(model.graph, _names_read(model.graph))
    return count


def one_d_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv / ConvTranspose nodes (subgraphs included) with 1-D kernels, or of unknown rank."""
    found = []

    def walk(graph: onnx.GraphProto, ranks: dict[str, int]) -> None:
        ranks = {**ranks, **{t.name: len(t.dims) for t in graph.initializer}}
        for node in graph.node:
            if node.op_type in CONVS:
                kernel = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "kernel_shape"), None)
                rank = len(kernel) + 2 if kernel is not None else ranks.get(node.input[1])
                if rank in (3, None):  # None: the weight is computed, so its rank is unknown here
                    found.append(node.name)
            for a in node.attribute:
                for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    walk(g, ranks)

    walk(model.graph, {})
    return found
