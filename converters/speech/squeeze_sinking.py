"""Keep unit-height tensors 4-D between Convs: move each Squeeze (axis 2) that follows a rewritten
Conv (unit_height.py) past the elementwise ops after it, so that Squeeze -> ... -> Unsqueeze pairs
cancel.

Why: with the Squeeze in between, ONNX Runtime sees Conv -> Squeeze -> LeakyRelu and can fuse
nothing; on 4-D tensors it fuses Conv + LeakyRelu into one NCHWc convolution (the activation
applied as the output is written) and keeps NCHWc tensors between a Conv and the residual Add after it.

An elementwise node is lifted when one input already has a 4-D twin and every other input has
rank <= 3 (its 3-D result is then the 4-D one squeezed): a rank-2/3 operand is unsqueezed once
(the masks: one Unsqueeze per mask, shared), a scalar or 1-D one broadcasts the same either way.
A Squeeze is kept only where something still reads the 3-D tensor (e.g. Shape).
"""

from __future__ import annotations

import onnx
from onnx import helper

from tritonize.converters.speech.unit_height import _AXIS

ELEMENTWISE = {"LeakyRelu", "Relu", "Tanh", "Sigmoid", "Add", "Sub", "Mul", "Div"}


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    ranks = {t.name: len(t.dims) for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    for n in g.node:  # Constant nodes: shape inference may not list them
        if n.op_type == "Constant":
            t = next((a.t for a in n.attribute if a.name == "value"), None)
            if t is not None:
                ranks[n.output[0]] = len(t.dims)
    return ranks


def _is_unit_axis(node: onnx.NodeProto) -> bool:
    return len(node.input) == 2 and node.input[1] == _AXIS


def sink_squeezes(model: onnx.ModelProto) -> int:
    """Rewrite `model` (main graph) in place; returns how many elementwise nodes now run on 4-D tensors."""
    ranks = _ranks(model)
    twin: dict[str, str] = {}  # 3-D tensor -> its 4-D (unit-height) twin
    unsqueezed: dict[str, str] = {}  # rank-2/3 operand -> its Unsqueezed copy (made once)
    renamed: dict[str, str] = {}  # outputs of cancelled Unsqueezes -> the 4-D tensor they equal
    nodes, lifted = [], 0
    for node in model.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        if node.op_type == "Squeeze" and _is_unit_axis(node):
            twin[node.output[0]] = node.input[0]
        elif node.op_type == "Unsqueeze" and _is_unit_axis(node) and node.input[0] in twin:
            renamed[node.output[0]] = twin[node.input[0]]
            continue
        elif (node.op_type in ELEMENTWISE and node.domain in ("", "ai.onnx") and ranks.get(node.output[0]) == 3
              and any(i in twin for i in node.input)
              and all(i in twin or ranks.get(i, 9) <= 3 for i in node.input)):
            inputs = []
            for i in node.input:
                if i in twin:
                    inputs.append(twin[i])
                elif ranks[i] <= 1:
                    inputs.append(i)
                else:
                    if i not in unsqueezed:
                        unsqueezed[i] = f"{i}_unit_height"
                        axis = helper.make_tensor(f"{i}_unit_height_axis", onnx.TensorProto.INT64, [1], [ranks[i] - 1])
                        model.graph.initializer.append(axis)
                        nodes.append(helper.make_node("Unsqueeze", [i, axis.name], [unsqueezed[i]], name=f"{i}_unsqueeze"))
                    inputs.append(unsqueezed[i])
            out4 = f"{node.output[0]}_unit_height"
            nodes.append(helper.make_node(node.op_type, inputs, [out4], name=node.name, **{
                a.name: helper.get_attribute_value(a) for a in node.attribute}))
            nodes.append(helper.make_node("Squeeze", [out4, _AXIS], [node.output[0]], name=f"{node.name}_squeeze"))
            twin[node.output[0]] = out4
            lifted += 1
            continue
        nodes.append(node)
    for o in model.graph.output:
        if o.name in renamed:
            raise ValueError(f"graph output {o.name} is a cancelled Unsqueeze")  # never in VITS; refuse rather than rewire
    _drop_unread(nodes, {o.name for o in model.graph.output})
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return lifted


def _drop_unread(nodes: list[onnx.NodeProto], outputs: set[str]) -> None:
    """Remove the Squeezes (and Unsqueezes) whose result nothing reads, repeatedly, in place."""
    while True:
        read = set(outputs)
        for n in nodes:
            read.update(n.input)
            for a in n.attribute:
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    raise ValueError("sink_squeezes handles graphs without subgraphs")
        keep = [n for n in nodes if n.op_type not in ("Squeeze", "Unsqueeze") or n.output[0] in read]
        if len(keep) == len(nodes):
            return
        nodes[:] = keep
