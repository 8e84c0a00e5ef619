"""Tiny encoders of the architectures people deploy (random weights from a config, tokenizers trained
on a few lines) and tiny sentence-transformers checkpoints built from them in-process: every pooling
mode, with and without Dense and Normalize, in the current file format and in the 2.x one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.tiny_models import CORPUS, LABELS, train_wordpiece

WIDTH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, initializer_range=0.3)


def train_unigram(specials: list[str], unk: str, template: str):
    """A SentencePiece-style Unigram tokenizer (XLM-R, DeBERTa-v2); specials take ids 0, 1, ..."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS * 4, trainers.UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token=unk))
    bos, eos = template.split(" $A ")
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, tok.token_to_id(t)) for t in (bos, eos)])
    return tok


def save(model, tok, path: Path, seed: int = 0) -> Path:
    model.eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_bert(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = BertTokenizerFast(tokenizer_object=train_wordpiece(), model_max_length=max_length, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    return save(BertModel(BertConfig(vocab_size=len(tok), max_position_embeddings=max_length, **WIDTH)), tok, path)


def build_xlm_roberta(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    tok = XLMRobertaTokenizerFast(tokenizer_object=train_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>", "<s> $A </s>"),
                                  model_max_length=max_length, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                  unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    assert tok.pad_token_id == 1
    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=len(tok), max_position_embeddings=max_length + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2, **WIDTH)
    return save(XLMRobertaModel(config), tok, path)


def build_mpnet(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    import torch
    from tokenizers import processors
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    wordpiece = train_wordpiece()
    # MPNet's vocabulary puts <s>, <pad>, </s> first; pad id 1, positions start after it (as RoBERTa).
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer, wp.pre_tokenizer = wordpiece.normalizer, wordpiece.pre_tokenizer
    wp.train_from_iterator(CORPUS * 4, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]))
    wp.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok = MPNetTokenizerFast(tokenizer_object=wp, model_max_length=max_length, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                             cls_token="<s>", unk_token="[UNK]", pad_token="<pad>", mask_token="<mask>")
    assert tok.pad_token_id == 1
    torch.manual_seed(seed)
    return save(MPNetModel(MPNetConfig(vocab_size=len(tok), max_position_embeddings=max_length + 2, pad_token_id=1, **WIDTH)), tok, path)


def build_deberta_v2_classifier(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    """DeBERTa-v3's shape: relative attention with position buckets, no absolute positions, no token types."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast

    tok = DebertaV2TokenizerFast(tokenizer_object=train_unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]", "[CLS] $A [SEP]"),
                                 model_max_length=max_length, bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]", sep_token="[SEP]",
                                 pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    config = DebertaV2Config(vocab_size=len(tok), max_position_embeddings=max_length, relative_attention=True, position_buckets=32,
                             max_relative_positions=-1, position_biased_input=False, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                             share_att_key=True, type_vocab_size=0, pad_token_id=0, num_labels=len(LABELS),
                             id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)}, **WIDTH)
    torch.manual_seed(seed)
    return save(DebertaV2ForSequenceClassification(config), tok, path)


def build_electra_classifier(path: Path, max_length: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import ElectraConfig, ElectraForSequenceClassification, ElectraTokenizerFast

    tok = ElectraTokenizerFast(tokenizer_object=train_wordpiece(), model_max_length=max_length, unk_token="[UNK]", pad_token="[PAD]",
                               cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = ElectraConfig(vocab_size=len(tok), embedding_size=16, max_position_embeddings=max_length, num_labels=len(LABELS),
                           id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)}, **WIDTH)
    torch.manual_seed(seed)
    return save(ElectraForSequenceClassification(config), tok, path)


@dataclass(frozen=True)
class SentenceVariant:
    """One tiny sentence-transformers checkpoint: its pooling, Dense layers (out size, activation), Normalize,
    file format and prompts."""

    name: str
    modes: tuple[str, ...]
    dense: tuple[tuple[int, str], ...] = ()
    normalize: bool = True
    legacy: bool = False  # 2.x files: pooling_mode_* booleans, sentence_transformers.models.* types, max_seq_length
    prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    include_prompt: bool = True
    base: str = "bert"
    similarity: str | None = None


ACTIVATIONS = {"tanh": "Tanh", "identity": "Identity", "relu": "ReLU", "sigmoid": "Sigmoid"}
LEGACY_SEQ_LENGTH = 40  # below the tokenizer's 64, so the 2.x max_seq_length is what truncates


def build_sentence_model(variant: SentenceVariant, base_path: Path, path: Path, seed: int = 0) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    torch.manual_seed(seed)
    transformer = Transformer(str(base_path))
    width = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(width, pooling_mode=variant.modes if len(variant.modes) > 1 else variant.modes[0],
                                    include_prompt=variant.include_prompt)]
    size = width * len(variant.modes)
    for out, activation in variant.dense:
        modules.append(Dense(size, out, activation_function=getattr(torch.nn, ACTIVATIONS[activation])()))
        size = out
    if variant.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=variant.prompts or None, default_prompt_name=variant.default_prompt_name,
                                similarity_fn_name=variant.similarity)
    model.save(str(path))
    if variant.legacy:
        write_legacy_files(path, variant, width)
    return path


def write_legacy_files(path: Path, variant: SentenceVariant, width: int) -> None:
    """The 2.x format: boolean pooling keys, `sentence_transformers.models.*` module types, the
    Transformer's max_seq_length in sentence_bert_config.json."""
    keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens", "weightedmean": "pooling_mode_weightedmean_tokens",
            "lasttoken": "pooling_mode_lasttoken"}
    pooling = {"word_embedding_dimension": width, **{k: mode in variant.modes for mode, k in keys.items()}}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    modules = json.loads((path / "modules.json").read_text())
    for m in modules:
        m["type"] = "sentence_transformers.models." + m["type"].rsplit(".", 1)[-1]
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": LEGACY_SEQ_LENGTH, "do_lower_case": False}))
