"""The transformers architectures the encoder converter serves, and the reason others are refused.

Every conversion is checked against PyTorch (and an embedder against SentenceTransformer.encode), so an
architecture serves exactly or fails its parity check; the ones below are under test with tiny
checkpoints (tests/encoders/test_sentence_transformers.py, tests/encoders/test_conversion.py). Models
that are not bidirectional encoders are refused before any work.
"""

from __future__ import annotations

# model_type -> what it covers; each has a tiny-checkpoint test through convert -> serve -> client.
TESTED = {
    "bert": "BERT, MiniLM (all-MiniLM-L6-v2), BGE, LaBSE",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa (multilingual E5, BGE-M3's encoder)",
    "distilbert": "DistilBERT",
    "mpnet": "MPNet (all-mpnet-base-v2)",
    "deberta-v2": "DeBERTa-v2 and v3",
    "electra": "ELECTRA",
}
# Generators: causal or encoder-decoder models have their own converters.
GENERATORS = {"gpt2": "gpt2", "t5": "t5", "mt5": "t5", "bart": None, "llama": None, "mistral": None, "qwen2": None, "qwen3": None,
              "gemma": None, "gemma2": None, "phi": None, "phi3": None, "gpt_neox": None, "opt": None}


class UnsupportedArchitecture(ValueError):
    pass


def check_architecture(config, task: str) -> None:
    """Refuse, with the reason, a checkpoint the encoder pipeline cannot serve exactly."""
    kind = config.model_type
    if kind in GENERATORS or getattr(config, "is_encoder_decoder", False) or getattr(config, "is_decoder", False):
        other = GENERATORS.get(kind)
        hint = f"convert it with `tritonize convert {other}`" if other else "it is not served by tritonize"
        raise UnsupportedArchitecture(
            f"model_type {kind!r} is a generator (causal or encoder-decoder), not a bidirectional encoder: the {task} pipeline runs one "
            f"forward over right-padded rows with no cache; {hint}. Encoders under test: {', '.join(TESTED)}")


def tested(config) -> bool:
    return config.model_type in TESTED
