"""Tiny GPT-2 and T5 checkpoints built locally from configs: random weights, tokenizers trained on a few
lines. The tests and `tritonize demo` use them, since nothing may download.

Default initialisation makes a tiny random generator repeat one token whatever the prompt, so the
initialisation is scaled (DESIGN.md). The corpus has multi-byte characters so that byte-level BPE
emits partial UTF-8 characters, which streaming must hold back.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "triton serves models with dynamic batching and ensembles",
    "tokens stream back one piece at a time while the batch keeps running",
    "héllo wörld, ünïcode café — naïve façade, 日本語のテキスト, emoji 🙂 and ½ ¾",
    "numbers like 42 and 3.14 and punctuation ! ? , .",
    "a tiny model is built from a config with random weights",
    "the server stays ready when a request is bad",
]
GPT2_CONTEXT = 512  # long enough that a single generation lasts a while (overload and cancel tests)
# The tiny GPT-2 carries a chat template (as instruction-tuned checkpoints do) so that the gateway's
# rendering of it is tested; the tiny T5 has none and gets the gateway's plain template.
GPT2_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def train_byte_level_bpe(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # no blank lines on stdout
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def train_unigram(vocab_size: int = 120):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    return tok


def build_tiny_gpt2(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    end = "<|endoftext|>"
    tok = GPT2TokenizerFast(tokenizer_object=train_byte_level_bpe(), eos_token=end, bos_token=end, unk_token=end,
                            model_max_length=GPT2_CONTEXT)
    tok.chat_template = GPT2_CHAT_TEMPLATE
    config = GPT2Config(vocab_size=len(tok), n_positions=GPT2_CONTEXT, n_embd=32, n_layer=2, n_head=4, initializer_range=0.35,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_t5(path: Path, seed: int = 0) -> Path:
    """Gated-GELU feed-forward (T5 v1.1 / Flan-T5): with ReLU, tiny T5s repeat one token per prompt."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

    tok = T5TokenizerFast(tokenizer_object=train_unigram(), eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                          extra_ids=0, model_max_length=128)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", initializer_factor=3.0, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
