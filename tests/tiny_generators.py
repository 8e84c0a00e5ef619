"""Tiny GPT-2 and T5 checkpoints built locally (random weights, tokenizers trained on a few lines) and
the builder that converts them into the shared test repository.

Default initialisation makes a tiny random generator repeat one token whatever the prompt, so the
initialisation is scaled (DESIGN.md); tests assert that the reference output varies across prompts.
The corpus has multi-byte characters so byte-level BPE emits partial UTF-8 characters.
"""

from __future__ import annotations

from pathlib import Path

GPT2 = "tiny-gpt2"
GPT2_LIMITS = "tiny-gpt2-limits"  # same checkpoint, one slot and a queue of one (overload tests)
T5 = "tiny-t5"

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


def train_byte_level_bpe(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def train_unigram(vocab_size: int = 120):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
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


def build_generators(repo: Path, work: Path) -> dict:
    """conftest BUILDERS entry: convert the tiny generators into the shared repository."""
    from converters.generation_common import GenerationLimits
    from converters.gpt2 import convert_gpt2
    from converters.t5 import convert_t5

    gpt2 = build_tiny_gpt2(work / "tiny-gpt2")
    quiet = lambda m: None  # noqa: E731
    served = GenerationLimits(max_new_tokens=400, max_sequences=8, max_queue=16, intra_op_threads=1)
    convert_gpt2(str(gpt2), repo, GPT2, served, log=quiet)
    one_slot = GenerationLimits(max_new_tokens=400, max_sequences=1, max_queue=1, intra_op_threads=1)
    convert_gpt2(str(gpt2), repo, GPT2_LIMITS, one_slot, log=quiet)
    t5 = build_tiny_t5(work / "tiny-t5")
    convert_t5(str(t5), repo, T5, GenerationLimits(max_new_tokens=64, max_sequences=8, max_queue=16, intra_op_threads=1), log=quiet)
    return {"tiny_gpt2": gpt2, "tiny_t5": t5}
