"""BERT-shaped encoders built locally from configs (random weights, a WordPiece tokenizer trained on a
few lines): for benchmarks and GPU checks, where nothing may download. `size="base"` is BERT-base's
architecture (12 layers, 768 wide, 12 heads); `size="tiny"` two layers of 32."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "triton serves models with dynamic batching and ensembles",
    "latency throughput queue replicas padding tokens batch",
    "a model is built from a config with random weights",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(lines: list[str], vocab_size: int = 1000):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(lines * 4, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def build_random_bert(path: Path, size: str = "base", task: str = "embedding", corpus: list[str] | None = None,
                      max_length: int = 512, seed: int = 0) -> Path:
    """`corpus`: lines whose words should be single tokens (workloads count tokens with them)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    if size not in ("base", "tiny"):
        raise ValueError(f"size must be base or tiny, got {size!r}")
    tok = BertTokenizerFast(tokenizer_object=train_wordpiece(CORPUS + list(corpus or [])), model_max_length=max_length, unk_token="[UNK]",
                            pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    shape = {} if size == "base" else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    labels = ["negative", "neutral", "positive"]
    config = BertConfig(vocab_size=len(tok), max_position_embeddings=max_length, initializer_range=0.3 if size == "tiny" else 0.02,
                        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={v: k for k, v in enumerate(labels)}, **shape)
    torch.manual_seed(seed)
    (BertModel if task == "embedding" else BertForSequenceClassification)(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
