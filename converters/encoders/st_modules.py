"""A sentence-transformers checkpoint's own embedding, read from its files: what the served pipeline
must compute after the encoder.

- `modules.json`: the module list. Transformer first, then Pooling, any Dense layers and an optional
  Normalize; any other module is refused by name (serving without it would return other vectors).
- `1_Pooling/config.json`: the pooling modes, in the 2.x format (`pooling_mode_*_token` booleans) or
  the newer one (`pooling_mode`: a name or a list), and `include_prompt`.
- `N_Dense/`: `config.json` (sizes, bias, activation) and the weights (`model.safetensors` or
  `pytorch_model.bin`).
- `sentence_bert_config.json` (the Transformer's `max_seq_length`, `do_lower_case`) and
  `config_sentence_transformers.json` (prompts, `default_prompt_name`, `similarity_fn_name`).

A checkpoint without `modules.json` is a plain transformers one: mean pooling and L2 normalisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tritonize.contract.encoders import Pooling, Prompts
from tritonize.runtime.encoders.embedding_head import DenseLayer, EmbeddingHead

SUPPORTED = ("Transformer", "Pooling", "Dense", "Normalize")
# 2.x pooling keys, in the order sentence-transformers concatenates them.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
DENSE_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}
DEFAULT_DESCRIPTION = "mean pooling + L2 normalise (no modules.json: a plain transformers checkpoint, served with the default)"


class UnsupportedModule(ValueError):
    """The checkpoint's pipeline has a part the served pipeline cannot compute exactly."""


@dataclass
class SentenceModules:
    """What a checkpoint's files say its embedding is."""

    pooling: Pooling = field(default_factory=Pooling)
    dense: list[DenseLayer] = field(default_factory=list)
    prompts: Prompts = field(default_factory=Prompts)
    max_seq_length: int | None = None
    transformer_path: str = ""  # the Transformer module's folder (older checkpoints: 0_Transformer)
    sentence_transformers: bool = False  # False: a plain checkpoint, the default head

    def head(self) -> EmbeddingHead:
        return EmbeddingHead(self.pooling, self.dense)

    def embedding_size(self, hidden_size: int) -> int:
        return self.dense[-1].weight.shape[0] if self.dense else hidden_size * len(self.pooling.modes)

    def describe(self) -> str:
        if not self.sentence_transformers:
            return DEFAULT_DESCRIPTION
        p = self.pooling
        parts = [" + ".join(p.modes) + " pooling" + ("" if p.include_prompt else " (prompt excluded)")]
        parts += [f"Dense {d.weight.shape[1]}->{d.weight.shape[0]} {a}" for d, a in zip(self.dense, p.dense)]
        parts.append("Normalize" if p.normalize else "no Normalize (vectors served un-normalised)")
        prompts = self.prompts
        prompt = f"; default prompt {prompts.default_prompt_name!r}" if prompts.default_prompt_name is not None else ""
        return "sentence-transformers: " + " -> ".join(parts) + prompt + f"; similarity {prompts.similarity_fn_name}"


def checkpoint_folder(source: str) -> Path:
    """A local folder with the checkpoint's sentence-transformers files: the folder itself, or for a hub
    id the cached snapshot of its small files (downloaded where the network allows; HF_HUB_OFFLINE uses
    the cache)."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(source, allow_patterns=["*.json"]))
    # Dense weights, and an older checkpoint's whole Transformer folder (0_Transformer/).
    folders = [m["path"] for m in read_json(folder / "modules.json") or [] if short_type(m.get("type", "")) in ("Dense", "Transformer") and m.get("path")]
    if folders:
        folder = Path(snapshot_download(source, allow_patterns=["*.json", *(f"{d}/*" for d in folders)]))
    return folder


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def short_type(type_path: str) -> str:
    """`sentence_transformers.models.Pooling` (2.x) or `sentence_transformers.sentence_transformer.modules.pooling.Pooling`
    (5.x) -> Pooling; a class outside sentence-transformers keeps its full path (and is refused)."""
    return type_path.rsplit(".", 1)[-1] if type_path.startswith("sentence_transformers.") else type_path


def pooling_modes(config: dict) -> tuple[str, ...]:
    if "pooling_mode" in config:  # the newer format: a name or a list, concatenated in its order
        mode = config["pooling_mode"]
        return (mode,) if isinstance(mode, str) else tuple(mode)
    return tuple(m for k, m in LEGACY_POOLING_KEYS.items() if config.get(k)) or ("mean",)


def read_dense(folder: Path) -> tuple[DenseLayer, str]:
    config = read_json(folder / "config.json") or {}
    activation_path = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation_path not in DENSE_ACTIVATIONS:
        raise UnsupportedModule(f"{folder.name}: Dense activation {activation_path!r} is not served; supported: {', '.join(DENSE_ACTIVATIONS)}")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise UnsupportedModule(f"{folder.name}: a Dense on {config[key]!r} is not served; only on the sentence embedding")
    if (folder / "model.safetensors").exists():
        from safetensors.numpy import load_file

        weights = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").exists():
        import torch

        weights = {k: v.numpy() for k, v in torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True).items()}
    else:
        raise UnsupportedModule(f"{folder.name}: no model.safetensors or pytorch_model.bin with the Dense weights")
    weight = np.asarray(weights["linear.weight"], np.float32)
    bias = np.asarray(weights["linear.bias"], np.float32) if "linear.bias" in weights else None
    expected = (config.get("out_features", weight.shape[0]), config.get("in_features", weight.shape[1]))
    if weight.shape != tuple(expected):
        raise UnsupportedModule(f"{folder.name}: weight {list(weight.shape)} does not match out/in features {list(expected)}")
    name = DENSE_ACTIVATIONS[activation_path]
    return DenseLayer(weight, bias, name), name


def read_prompts(folder: Path) -> Prompts:
    config = read_json(folder / "config_sentence_transformers.json") or {}
    return Prompts(dict(config.get("prompts") or {}), config.get("default_prompt_name"), config.get("similarity_fn_name") or "cosine")


def read_sentence_modules(folder: Path) -> SentenceModules:
    """The embedding a checkpoint's files describe; the default for a plain checkpoint."""
    modules = read_json(folder / "modules.json")
    if modules is None:
        return SentenceModules()
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [short_type(m.get("type", "")) for m in modules]
    for m, kind in zip(modules, kinds):
        if kind not in SUPPORTED:
            raise UnsupportedModule(f"module {m.get('path') or m.get('name')!r} of type {m.get('type')!r} is not served; "
                                    f"supported sentence-transformers modules: {', '.join(SUPPORTED)}")
    # The order sentence-transformers runs them in: Transformer, Pooling, Dense..., Normalize.
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Dense" for k in kinds[2:len(kinds) - (kinds[-1] == "Normalize")]):
        raise UnsupportedModule(f"module order {' -> '.join(kinds)} is not served; expected Transformer -> Pooling -> Dense (any) -> Normalize (optional)")
    transformer_path = modules[0].get("path", "")
    sbert = read_json(folder / transformer_path / "sentence_bert_config.json") or {}
    if sbert.get("do_lower_case"):
        raise UnsupportedModule("sentence_bert_config.json: do_lower_case is not served (the served tokenizer is tokenizer.json as is)")
    pooling_config = read_json(folder / modules[1]["path"] / "config.json") or {}
    dense = [read_dense(folder / m["path"]) for m, k in zip(modules, kinds) if k == "Dense"]
    prompts = read_prompts(folder)
    pooling = Pooling(normalize=kinds[-1] == "Normalize", modes=pooling_modes(pooling_config),
                      include_prompt=bool(pooling_config.get("include_prompt", True)), dense=tuple(a for _, a in dense))
    return SentenceModules(pooling, [d for d, _ in dense], prompts, sbert.get("max_seq_length"), transformer_path, True)


def with_prompt_length(modules: SentenceModules, tokenizer) -> SentenceModules:
    """Where the default prompt is left out of the pooling: its length in tokens, counted as
    sentence-transformers does (the prompt encoded alone, a trailing special token not counted)."""
    prompt = modules.prompts.default_prompt
    if modules.pooling.include_prompt or not prompt:
        return modules
    ids = tokenizer(prompt)["input_ids"]
    length = len(ids) - (1 if ids and ids[-1] in tokenizer.all_special_ids else 0)
    from dataclasses import replace

    return replace(modules, pooling=replace(modules.pooling, prompt_length=length))
