"""A tiny random VITS voice built from its config, with a character vocabulary (as MMS-TTS has): for
the tests and for `make demo`, where nothing may download."""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = ["<pad>"] + list(" abcdefghijklmnopqrstuvwxyz'") + ["<unk>"]


def build_tiny_vits(path: Path, seed: int = 0, mms_size: bool = False, vocab: list[str] | None = None) -> Path:
    """`mms_size`: the MMS-TTS architecture's own sizes (VitsConfig defaults, 16 kHz), for benchmarks.
    `vocab`: another character table (one without "<pad>" makes the tokenizer add its pad token past
    the embedding table, as some published voices do)."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    vocab = vocab or VOCAB
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(vocab)}))
    tok = VitsTokenizer(str(path / "vocab.json"), add_blank=True, normalize=True, phonemize=False)
    config = VitsConfig(vocab_size=len(vocab)) if mms_size else VitsConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, flow_size=16,
        spectrogram_bins=33, upsample_initial_channel=32, upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], duration_predictor_num_flows=2,
        duration_predictor_filter_channels=32, prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2, depth_separable_num_layers=2, sampling_rate=8000,
    )
    torch.manual_seed(seed)
    VitsModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
