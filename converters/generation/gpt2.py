"""GPT-2 (decoder-only) -> ONNX with past key/values -> a served, streaming generator.

Optimum's `text-generation-with-past` export is one graph that takes the cache (of length 0 for the
prompt) plus attention mask and position ids, which is what lets the engine batch sequences whose
caches differ in length. The served graph computes logits at the last position only (the engine reads
nothing else): over a prompt, the vocabulary projection of every position was ~30% of GPT-2 small's
prefill arithmetic, which Hugging Face's `generate` skips too. Each step returns only its new cache
columns (append_cache.py), so the engine never copies the cache. Parity: logits of the prompt forward and of
a cached one-token forward against PyTorch, on prompts of several lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonize.contract.generation import NEW_CACHE_PREFIX
from tritonize.converters.generation.append_cache import split_cache_attention
from tritonize.converters.generation.common import VALIDATION_PROMPTS, GenerationConversion, check_parity
from tritonize.converters.generation.key_transpose import fuse_key_transposes

TASK = "text-generation-with-past"


# A cached step of a graph that returns only the new columns is checked the way the engine runs it: the
# cache in a buffer with this many spare columns, masked.
PARITY_SPARE_COLUMNS = 5


def _ort_step(session, ids: np.ndarray, past: list[np.ndarray], past_names: list[str], start: int):
    n = ids.shape[1]
    mask = np.ones((1, start + n), np.int64)
    if start and any(o.name.startswith(NEW_CACHE_PREFIX) for o in session.get_outputs()):
        past = [np.pad(p, ((0, 0), (0, 0), (0, PARITY_SPARE_COLUMNS), (0, 0))) for p in past]
        mask = np.concatenate([mask[:, :start], np.zeros((1, PARITY_SPARE_COLUMNS), np.int64), mask[:, start:]], axis=1)
    feed = {"input_ids": ids, "attention_mask": mask, **dict(zip(past_names, past))}
    if "position_ids" in {i.name for i in session.get_inputs()}:
        feed["position_ids"] = np.arange(start, start + n, dtype=np.int64)[None]
    out = session.run(None, feed)
    return out[0], out[1:]


def keep_last_position_logits(path: Path) -> bool:
    """Rewrite the graph so the LM head sees only the last position: logits [batch, 1, vocab]. False (graph
    untouched) when the head is not the MatMul over [batch, sequence, hidden] that Optimum exports."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)  # large weights stay where they are
    graph = model.graph
    head = next((n for n in graph.node if "logits" in n.output), None)
    if head is None or head.op_type != "MatMul":
        return False
    hidden = head.input[0]
    constants = {"last_start": [-1], "last_end": [2**63 - 1], "last_axis": [1]}
    for name, value in constants.items():
        graph.initializer.append(helper.make_tensor(f"/tritonize/{name}", onnx.TensorProto.INT64, [1], value))
    last = "/tritonize/last_hidden"
    slice_node = helper.make_node("Slice", [hidden, *(f"/tritonize/{n}" for n in constants)], [last], name="/tritonize/LastPosition")
    graph.node.insert(list(graph.node).index(head), slice_node)
    head.input[0] = last
    logits = next(o for o in graph.output if o.name == "logits")
    dim = logits.type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = 1
    onnx.save(model, str(path))
    return True


def parity(session, model, tokenizer) -> tuple[float, float, float]:
    """Max abs logits error of the prompt forward and of one cached forward, and the largest |logit|."""
    import torch

    names = sorted((i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")),
                   key=lambda n: (int(n.split(".")[1]), n))
    shape = session.get_inputs()[[i.name for i in session.get_inputs()].index(names[0])].shape
    first = cached = scale = 0.0
    for prompt in VALIDATION_PROMPTS:
        ids = np.asarray([tokenizer(prompt).input_ids], np.int64)
        empty = [np.zeros((1, int(shape[1]), 0, int(shape[3])), np.float32)] * len(names)
        logits, present = _ort_step(session, ids, empty, names, 0)
        with torch.inference_mode():
            ref = model(torch.from_numpy(ids), use_cache=True)
            first = max(first, float(np.abs(logits[:, -1] - ref.logits[:, -1].numpy()).max()))
            scale = max(scale, float(ref.logits.abs().max()))
            nxt = np.asarray([[int(ref.logits[0, -1].argmax())]], np.int64)
            step = model(torch.from_numpy(nxt), past_key_values=ref.past_key_values, use_cache=True)
        logits, _ = _ort_step(session, nxt, present, names, ids.shape[1])
        cached = max(cached, float(np.abs(logits[:, -1] - step.logits[:, -1].numpy()).max()))
    return first, cached, scale


class Gpt2Conversion(GenerationConversion):
    model_family = "gpt2"

    def export(self, tmp: Path) -> None:
        import onnxruntime as ort
        from optimum.exporters.onnx import main_export
        from transformers import AutoModelForCausalLM, AutoTokenizer

        name, model = self.name, self.model
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{model} has no fast tokenizer (tokenizer.json); the served tokenizer needs one")
        self.torch_model = AutoModelForCausalLM.from_pretrained(self.source).eval()
        config = self.torch_model.config
        self.max_context = int(getattr(config, "n_positions", getattr(config, "max_position_embeddings", 1024)))
        self.eos, self.tmp = config.eos_token_id, tmp
        out = tmp / "export"
        self.log(f"{name}: exporting {model} to ONNX ({TASK}: one graph, cache of any length)")
        main_export(self.source, out, task=TASK, library_name="transformers", do_validation=False)
        if not keep_last_position_logits(out / "model.onnx"):
            self.log(f"{name}: the LM head is not a plain MatMul; the graph keeps logits at every position")
        fused = fuse_key_transposes(out / "model.onnx")
        self.log(f"{name}: attention reads the key cache untransposed in {fused} layers")
        split = split_cache_attention(out / "model.onnx")
        self.log(f"{name}: " + (f"the graph returns only each step's new cache columns ({split} layers)" if split
                                else "the cache attention is not the expected pattern; the graph returns the whole cache"))
        self.session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        self.files = {"model.onnx": out / "model.onnx"}
        if (out / "model.onnx_data").exists():  # weights over 2 GB live beside the graph
            self.files["model.onnx_data"] = out / "model.onnx_data"

    def parity(self) -> None:
        self.errors = parity(self.session, self.torch_model, self.tokenizer)
        check_parity(self.name, *self.errors, self.tolerance, self.log)


convert_gpt2 = Gpt2Conversion.convert
