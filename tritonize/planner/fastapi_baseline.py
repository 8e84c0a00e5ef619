"""The baseline many teams run instead of Triton: FastAPI + uvicorn + PyTorch, one process.

    TRITONIZE_BASELINE_MODEL=sentence-transformers/all-MiniLM-L6-v2 uvicorn tritonize.planner.fastapi_baseline:app

POST /embed {"texts": [...]} -> {"embeddings": [[...], ...]}: the same tokenization, mean pooling and
L2 normalisation as the served ensemble, in PyTorch eager, one request at a time. With
TRITONIZE_BASELINE_TASK=classify it loads the checkpoint's classification head instead and serves
POST /classify {"texts": [...]} -> {"labels": [...], "probabilities": [[...], ...]}, what the served
classify pipeline returns (the load tests call /{scenario pipeline}).
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel, Field
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from tritonize.converters.checkpoints import resolve

torch.set_num_threads(int(os.environ.get("TRITONIZE_BASELINE_THREADS", "1")))
SOURCE = resolve(os.environ.get("TRITONIZE_BASELINE_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
TASK = os.environ.get("TRITONIZE_BASELINE_TASK", "embed")
if TASK not in ("embed", "classify"):
    raise SystemExit(f"TRITONIZE_BASELINE_TASK must be embed or classify, got {TASK!r}")
tokenizer = AutoTokenizer.from_pretrained(SOURCE)
model = (AutoModelForSequenceClassification if TASK == "classify" else AutoModel).from_pretrained(SOURCE).eval()
app = FastAPI(title="FastAPI + PyTorch baseline")


class EmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=64)


@app.get("/health")
def health() -> dict:
    return {"ok": True}


def _tokens(texts: list[str]) -> dict:
    return tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")


def embed(req: EmbedRequest) -> dict:
    enc = _tokens(req.texts)
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return {"embeddings": torch.nn.functional.normalize(pooled, dim=-1).tolist()}


def classify(req: EmbedRequest) -> dict:
    with torch.inference_mode():
        probabilities = model(**_tokens(req.texts)).logits.float().softmax(dim=-1)
    labels = [model.config.id2label[i] for i in probabilities.argmax(dim=-1).tolist()]
    return {"labels": labels, "probabilities": probabilities.tolist()}


app.post(f"/{TASK}")(classify if TASK == "classify" else embed)  # the one route the loaded model serves
