"""The PyTorch-engine flavour of the test models (`convert ... --device cpu`), served beside the ONNX
ones by the session server, so the same parity, batching, streaming and bad-input tests run on both.
Built from the checkpoints the other builders made (no new model is trained; each conversion only
stores and reloads weights, about a second)."""

from __future__ import annotations

from pathlib import Path

EMBEDDER_TORCH = "minilm-torch"
CLASSIFIER_TORCH = "tiny-bert-cls-torch"  # not served (each PyTorch step costs the server ~7 CPU-seconds to start): in process
GPT2_TORCH = "tiny-gpt2-torch"
T5_TORCH = "tiny-t5-torch"
VOICE_TORCH = "tiny-vits-torch"


def build_torch_flavours(repo: Path, work: Path) -> dict:
    """conftest BUILDERS entry (after the ONNX builders, whose checkpoints it reuses)."""
    from tritonize.converters.device import Placement
    from tritonize.converters.encoders.weights import convert_bert_torch
    from tritonize.contract.generation import Limits
    from tritonize.converters.generation.weights import convert_generator_torch
    from tritonize.converters.repository import Batching
    from tritonize.converters.speech.weights import convert_tts_torch

    cpu, quiet = Placement("cpu"), (lambda m: None)
    batching = Batching(max_batch_size=16, intra_op_threads=1)
    convert_bert_torch("sentence-transformers/all-MiniLM-L6-v2", "embedding", repo, EMBEDDER_TORCH, cpu, batching, log=quiet)
    side = work / "torch-side-repository"
    convert_bert_torch(str(work / "tiny-bert-cls"), "classification", side, CLASSIFIER_TORCH, cpu, batching, log=quiet)
    limits = Limits(max_new_tokens=400, max_sequences=8, max_queue=16, intra_op_threads=1)
    convert_generator_torch("gpt2", str(work / "tiny-gpt2"), repo, GPT2_TORCH, limits, cpu, log=quiet)
    convert_generator_torch("t5", str(work / "tiny-t5"), repo, T5_TORCH, limits, cpu, log=quiet)
    convert_tts_torch(str(work / "tiny-vits"), repo, VOICE_TORCH, cpu, Batching(max_batch_size=8, intra_op_threads=1), log=quiet)
    return {"torch_side_repository": side}
