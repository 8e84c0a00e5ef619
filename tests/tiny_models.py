"""Tiny checkpoints built locally from configs: random weights, tokenizers trained on a few lines."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "triton serves models with dynamic batching and ensembles",
    "latency throughput queue replicas padding tokens batch",
    "a tiny model is built from a config with random weights",
    "hello world this is a test sentence for the tokenizer",
    "numbers like 42 and 3.14 and punctuation ! ? , .",
    "the server stays ready when a request is bad",
    "sentences of different lengths are grouped into buckets",
]
LABELS = ["negative", "neutral", "positive"]


def train_wordpiece(vocab_size: int = 200):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS * 4, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def build_tiny_bert_classifier(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    """A 2-layer BERT classifier; initializer_range is large so logits vary with the input."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tok = BertTokenizerFast(tokenizer_object=train_wordpiece(), model_max_length=max_length,
                            unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=max_length, num_labels=len(LABELS), initializer_range=0.3,
        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_distilbert_classifier(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    tok = DistilBertTokenizerFast(tokenizer_object=train_wordpiece(), model_max_length=max_length, unk_token="[UNK]",
                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=max_length,
                              num_labels=len(LABELS), initializer_range=0.3, id2label=dict(enumerate(LABELS)))
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_roberta_embedder(path: Path, max_length: int = 64, seed: int = 0, pad_id: int = 1,
                                max_positions: int | None = None, model_max_length: int | None = None) -> Path:
    """RoBERTa with a byte-level BPE tokenizer. Positions start after the pad id: with the real ones'
    pad_id 1 and max_length + 2 positions, max_length tokens fit. `pad_id` moves "<pad>" in the vocabulary."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    specials = ["<s>", "</s>", "<unk>", "<mask>"]
    specials.insert(pad_id, "<pad>")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=300, special_tokens=specials)
    work = path / "bpe"
    work.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(work))
    tok = RobertaTokenizerFast(vocab_file=str(work / "vocab.json"), merges_file=str(work / "merges.txt"),
                               model_max_length=model_max_length or max_length)
    assert tok.pad_token_id == pad_id, tok.pad_token_id
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=max_positions or max_length + 2, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.3)
    torch.manual_seed(seed)
    RobertaModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
