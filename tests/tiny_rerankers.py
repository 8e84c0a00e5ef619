"""Tiny cross-encoders built locally: a random 2-layer BertForSequenceClassification with one logit and a
WordPiece tokenizer trained on a few lines, whose pairs carry token types (segment B is 1, as BERT's)."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models import train_wordpiece

RERANKER = "tiny-reranker"  # the sigmoid default (a plain Hugging Face checkpoint)
RERANKER_IDENTITY = "tiny-reranker-identity"  # saved by sentence-transformers' CrossEncoder with activation_fn Identity
MAX_LENGTH = 48


def build_tiny_cross_encoder(path: Path, max_length: int = MAX_LENGTH, seed: int = 0, activation_fn=None) -> Path:
    """`activation_fn` (a torch module): saved as a sentence-transformers CrossEncoder with it; None: a plain checkpoint."""
    import torch
    from tokenizers import processors
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    backend = train_wordpiece()
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok = BertTokenizerFast(tokenizer_object=backend, model_max_length=max_length, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=max_length, num_labels=1, initializer_range=0.5)
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    if activation_fn is not None:
        from sentence_transformers import CrossEncoder

        CrossEncoder(str(path), device="cpu", activation_fn=activation_fn).save(str(path))
    return path


def build_rerankers(repo: Path, work: Path) -> dict:
    import torch

    from tritonize.converters.encoders.rerank import convert_rerank
    from tritonize.converters.repository import Batching

    plain = build_tiny_cross_encoder(work / "tiny-cross-encoder")
    identity = build_tiny_cross_encoder(work / "tiny-cross-encoder-identity", seed=1, activation_fn=torch.nn.Identity())
    batching = Batching(max_batch_size=16, intra_op_threads=1)
    reports = {name: convert_rerank(str(path), repo, name, batching=batching, max_documents=100, log=lambda m: None)
               for name, path in ((RERANKER, plain), (RERANKER_IDENTITY, identity))}
    return {"tiny_cross_encoder": plain, "tiny_cross_encoder_identity": identity, "rerank_reports": reports}
