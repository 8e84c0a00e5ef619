"""Where a sentence-transformers Dense layer runs: in the served numpy head (postprocess / fused step)
or inside the exported ONNX graph. Prints, for a BERT-base-sized encoder (random weights, built
locally) with LaBSE's head (CLS pooling -> Dense 768->768 tanh -> Normalize), per batch of 8 texts x 32
tokens: the encoder's ONNX Runtime time, the numpy head's time, and the same head as an ONNX graph run
by ONNX Runtime (what moving it into the exported graph would cost). Windows alternate, medians.

    .venv/bin/python -m benchmarks.investigations.dense_placement
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def head_graph(path: Path, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(hidden, hidden)).astype(np.float32) * 0.02, np.zeros(hidden, np.float32)
    nodes = [
        helper.make_node("Gather", ["hidden", "zero"], ["cls"], axis=1),
        helper.make_node("MatMul", ["cls", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["lin"]),
        helper.make_node("Tanh", ["lin"], ["act"]),
        helper.make_node("LpNormalization", ["act"], ["out"], axis=-1, p=2),
    ]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "t", hidden])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", hidden])],
                              [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w.T.copy(), b  # torch's [out, in]


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main() -> None:
    import onnxruntime as ort

    from tritonize.contract.encoders import Pooling
    from tritonize.converters.encoders.tiny import build_random_bert
    from tritonize.runtime.encoders.embedding_head import DenseLayer, EmbeddingHead
    from tritonize.runtime.encoders.engine_onnx import encoder_session

    with tempfile.TemporaryDirectory() as tmp:
        from optimum.exporters.onnx import main_export

        ckpt = build_random_bert(Path(tmp) / "bert-base", size="base")
        main_export(str(ckpt), Path(tmp) / "onnx", task="feature-extraction", library_name="transformers", do_validation=False)
        encoder = encoder_session(Path(tmp) / "onnx" / "model.onnx")
        weight, bias = head_graph(Path(tmp) / "head.onnx", 768)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        in_graph = ort.InferenceSession(str(Path(tmp) / "head.onnx"), opts, providers=["CPUExecutionProvider"])
        numpy_head = EmbeddingHead(Pooling(modes=("cls",), dense=("tanh",)), [DenseLayer(weight, bias, "tanh")])
        ids = np.random.default_rng(0).integers(5, 160, size=(8, 32)).astype(np.int64)
        mask = np.ones_like(ids)
        hidden = encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        np.testing.assert_allclose(numpy_head(hidden, mask), in_graph.run(None, {"hidden": hidden})[0], atol=1e-5)
        rows = {"encoder": [], "numpy head": [], "ORT head graph": []}
        for _ in range(5):  # alternating windows: this machine's speed drifts
            rows["encoder"].append(median_ms(lambda: encoder.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}), 10))
            rows["numpy head"].append(median_ms(lambda: numpy_head(hidden, mask), 200))
            rows["ORT head graph"].append(median_ms(lambda: in_graph.run(None, {"hidden": hidden}), 200))
        enc = float(np.median(rows["encoder"]))
        for name, values in rows.items():
            ms = float(np.median(values))
            print(f"{name:>15}: {ms:8.3f} ms per batch of 8 x 32 tokens ({ms / enc:.2%} of the encoder)")


if __name__ == "__main__":
    main()
