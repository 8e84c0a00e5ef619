"""A tiny random BERT classifier served end to end against PyTorch logits."""

import numpy as np
import pytest

from tests.conftest import CLASSIFIER, CLASSIFIER_FUSED
from tests.tiny_models import LABELS
from tests.torch_models import CLASSIFIER_TORCH

TEXTS = ["the quick brown fox", "triton serves models", "hello", "numbers like 42 and 3.14 " * 5, "padding tokens batch queue"]
LOGIT_TOLERANCE = 1e-4  # max abs difference, fp32 ONNX Runtime vs PyTorch


@pytest.fixture(scope="module")
def reference_logits(built):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = built["tiny_bert_classifier"]
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        return model(**tok(TEXTS, padding=True, truncation=True, return_tensors="pt")).logits.numpy()


def test_reference_varies_across_inputs(reference_logits):
    # A degenerate random model (same output for every text) would make the parity check vacuous.
    assert np.ptp(reference_logits, axis=0).max() > 0.1


@pytest.mark.parametrize("model", [CLASSIFIER, CLASSIFIER_FUSED])
@pytest.mark.parametrize("client_name", ["grpc_client", "http_client"])
def test_served_logits_match_pytorch(client_name, model, request, reference_logits):
    preds = request.getfixturevalue(client_name).classify(TEXTS, model=model)
    served = np.stack([p.logits for p in preds])
    assert np.abs(served - reference_logits).max() <= LOGIT_TOLERANCE
    for p, ref in zip(preds, reference_logits):
        assert p.label == LABELS[int(ref.argmax())]
        assert set(p.probabilities) == set(LABELS)
        assert abs(sum(p.probabilities.values()) - 1) < 1e-5
        assert p.score == pytest.approx(max(p.probabilities.values()))


def test_torch_engine_logits_match_pytorch(built, reference_logits):
    """The PyTorch engine's classification head (in process; the served torch encoder is the embedder)."""
    from transformers import AutoTokenizer

    from tritonize.runtime.encoders.encoder import load_engine
    from tritonize.runtime.engines import EngineSpec

    enc = AutoTokenizer.from_pretrained(built["tiny_bert_classifier"])(TEXTS, padding=True, truncation=True, return_tensors="np")
    folder = built["torch_side_repository"] / f"{CLASSIFIER_TORCH}_model" / "1"
    logits = load_engine(folder, "logits", EngineSpec("torch", "cpu", "float32", 1)).run(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64))
    assert np.abs(logits - reference_logits).max() <= LOGIT_TOLERANCE
