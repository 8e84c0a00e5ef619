"""Reading a sentence-transformers checkpoint's files, and the served numpy head against
sentence-transformers' own modules in PyTorch (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritonize.contract.encoders import POOLING_MODES, Pooling, Prompts
from tritonize.converters.encoders.st_modules import (
    DEFAULT_DESCRIPTION, UnsupportedModule, pooling_modes, read_sentence_modules, with_prompt_length,
)
from tritonize.converters.encoders.st_parity import MIN_COSINE, ParityError, check, compare_vectors
from tritonize.runtime.encoders.embedding_head import DenseLayer, EmbeddingHead

pytestmark = pytest.mark.unit
TYPES = {k: f"sentence_transformers.models.{k}" for k in ("Transformer", "Pooling", "Dense", "Normalize")}


def write_checkpoint(folder, modules, pooling=None, dense=None, prompts=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps([{"idx": i, "name": str(i), "path": p, "type": t} for i, (p, t) in enumerate(modules)]))
    for path, config in ((m[0], pooling if "Pooling" in m[1] else dense) for m in modules if m[0]):
        (folder / path).mkdir(exist_ok=True)
        (folder / path / "config.json").write_text(json.dumps(config or {}))
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    return folder


def token_batch(seed=0, rows=4, width=7, hidden=8):
    rng = np.random.default_rng(seed)
    lengths = np.array([7, 3, 5, 1])[:rows]
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int64)
    return rng.normal(size=(rows, width, hidden)).astype(np.float32), mask


@pytest.mark.parametrize("modes", [(m,) for m in POOLING_MODES] + [("cls", "mean", "max")])
@pytest.mark.parametrize("include_prompt", [True, False])
def test_numpy_pooling_matches_sentence_transformers_pooling(modes, include_prompt):
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling as StPooling

    tokens, mask = token_batch()
    prompt_length = 0 if include_prompt else 2
    st = StPooling(8, pooling_mode=modes if len(modes) > 1 else modes[0], include_prompt=include_prompt)
    features = {"token_embeddings": torch.from_numpy(tokens), "attention_mask": torch.from_numpy(mask.copy())}
    if not include_prompt:
        features["prompt_length"] = prompt_length
    reference = st(features)["sentence_embedding"].numpy()
    served = EmbeddingHead(Pooling(normalize=False, modes=modes, include_prompt=include_prompt, prompt_length=prompt_length))(tokens, mask)
    rows = mask[:, prompt_length:].any(axis=1)  # a row with every token excluded: -inf (max) or zeros, as in PyTorch
    np.testing.assert_allclose(served[rows], reference[rows], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["identity", "tanh", "relu", "sigmoid"])
def test_dense_and_normalize_match_sentence_transformers(activation):
    import torch
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize

    torch.manual_seed(0)
    act = {"identity": torch.nn.Identity(), "tanh": torch.nn.Tanh(), "relu": torch.nn.ReLU(), "sigmoid": torch.nn.Sigmoid()}[activation]
    dense = Dense(8, 5, activation_function=act)
    tokens, mask = token_batch()
    pooled = EmbeddingHead(Pooling(normalize=False, modes=("mean",)))(tokens, mask)
    reference = Normalize()(dense({"sentence_embedding": torch.from_numpy(pooled)}))["sentence_embedding"].detach().numpy()
    layer = DenseLayer(dense.linear.weight.detach().numpy(), dense.linear.bias.detach().numpy(), activation)
    served = EmbeddingHead(Pooling(normalize=True, modes=("mean",), dense=(activation,)), [layer])(tokens, mask)
    np.testing.assert_allclose(served, reference, rtol=1e-5, atol=1e-6)


def test_both_pooling_formats_read_the_same_modes():
    legacy = {"word_embedding_dimension": 8, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
    assert pooling_modes(legacy) == ("cls", "mean") == pooling_modes({"pooling_mode": ["cls", "mean"]})
    assert pooling_modes({"pooling_mode": "lasttoken"}) == ("lasttoken",)
    assert pooling_modes({"word_embedding_dimension": 8}) == ("mean",)  # no mode set: sentence-transformers' default


def test_a_checkpoint_is_read_into_the_served_head(tmp_path):
    from safetensors.numpy import save_file

    folder = write_checkpoint(tmp_path / "ck", [("", TYPES["Transformer"]), ("1_Pooling", TYPES["Pooling"]), ("2_Dense", TYPES["Dense"])],
                              pooling={"pooling_mode_cls_token": True, "include_prompt": False},
                              dense={"in_features": 8, "out_features": 4, "bias": True, "activation_function": "torch.nn.modules.activation.Tanh"},
                              prompts={"prompts": {"query": "query: "}, "default_prompt_name": "query", "similarity_fn_name": "dot"})
    save_file({"linear.weight": np.ones((4, 8), np.float32), "linear.bias": np.zeros(4, np.float32)}, str(folder / "2_Dense" / "model.safetensors"))
    m = read_sentence_modules(folder)
    assert m.pooling == Pooling(normalize=False, modes=("cls",), include_prompt=False, dense=("tanh",))
    assert m.prompts == Prompts({"query": "query: "}, "query", "dot") and m.embedding_size(8) == 4
    assert m.describe() == ("sentence-transformers: cls pooling (prompt excluded) -> Dense 8->4 tanh -> no Normalize (vectors served "
                            "un-normalised); default prompt 'query'; similarity dot")

    class Tok:  # the prompt alone encodes as [CLS] query : [SEP]: 3 tokens before the trailing special one
        all_special_ids = [2, 3]

        def __call__(self, text):
            return {"input_ids": [2, 10, 11, 3]}

    assert with_prompt_length(m, Tok()).pooling.prompt_length == 3


def test_a_plain_checkpoint_keeps_mean_and_normalise_and_says_so(tmp_path):
    m = read_sentence_modules(tmp_path)
    assert m.pooling == Pooling() and not m.sentence_transformers and m.describe() == DEFAULT_DESCRIPTION
    assert "plain transformers checkpoint" in DEFAULT_DESCRIPTION


@pytest.mark.parametrize("modules, config, message", [
    ([("", TYPES["Transformer"]), ("1_Pooling", TYPES["Pooling"]), ("2_LayerNorm", "sentence_transformers.models.LayerNorm")], {},
     r"module '2_LayerNorm' of type 'sentence_transformers.models.LayerNorm' is not served; supported sentence-transformers modules: "
     r"Transformer, Pooling, Dense, Normalize"),
    ([("", TYPES["Transformer"]), ("1_Pooling", "my_package.MyPooling")], {}, r"type 'my_package.MyPooling' is not served"),
    ([("", TYPES["Transformer"]), ("1_Dense", TYPES["Dense"]), ("2_Pooling", TYPES["Pooling"])], {},
     r"module order Transformer -> Dense -> Pooling is not served"),
    ([("", TYPES["Transformer"]), ("1_Pooling", TYPES["Pooling"]), ("2_Dense", TYPES["Dense"])],
     {"activation_function": "torch.nn.modules.activation.GELU"}, r"2_Dense: Dense activation 'torch.nn.modules.activation.GELU' is not served"),
])
def test_what_cannot_be_served_exactly_is_refused_by_name(tmp_path, modules, config, message):
    folder = write_checkpoint(tmp_path / "ck", modules, pooling={"pooling_mode": "mean"}, dense=config)
    with pytest.raises(UnsupportedModule, match=message):
        read_sentence_modules(folder)


def test_the_parity_check_fails_a_head_that_is_not_the_checkpoints():
    tokens, mask = token_batch()
    mean = EmbeddingHead(Pooling(modes=("mean",)))(tokens, mask)
    assert compare_vectors(mean, mean).min_cosine >= MIN_COSINE
    with pytest.raises(ParityError, match=r"min cosine .* \(floor 0.99999\)"):
        check(compare_vectors(EmbeddingHead(Pooling(modes=("cls",)))(tokens, mask), mean), "m")
    with pytest.raises(ParityError, match=r"max relative norm error"):  # right direction, wrong norm (Normalize missing)
        check(compare_vectors(EmbeddingHead(Pooling(normalize=False))(tokens, mask), mean), "m")


@pytest.mark.parametrize("build, message", [
    (lambda: Pooling(modes=("median",)), r"modes must be one or more of cls, max, mean"),
    (lambda: Pooling(dense=("gelu",)), r"dense activations must be among identity, tanh, relu, sigmoid, got \('gelu',\)"),
    (lambda: Prompts({"query": "q: "}, "passage"), r"default_prompt_name 'passage' is not one of the prompts: \['query'\]"),
    (lambda: Prompts(similarity_fn_name="jaccard"), r"similarity_fn_name must be one of cosine, dot, euclidean, manhattan"),
])
def test_a_bad_head_parameter_names_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("value", [Pooling(False, ("cls", "mean"), False, 3, ("tanh", "identity")), Prompts({"q": "query: "}, "q", "dot")])
def test_head_parameters_read_back_through_a_config(value, tmp_path):
    from tests.contract import through_config

    assert type(value).from_params(through_config(value.to_params(), tmp_path)) == value


def test_a_generator_is_refused_with_the_reason():
    from transformers import GPT2Config, T5Config

    from tritonize.converters.encoders.architectures import UnsupportedArchitecture, check_architecture

    with pytest.raises(UnsupportedArchitecture, match=r"model_type 'gpt2' is a generator .* convert it with `tritonize convert gpt2`"):
        check_architecture(GPT2Config(), "embedding")
    with pytest.raises(UnsupportedArchitecture, match=r"model_type 't5' .* Encoders under test: bert, roberta, xlm-roberta"):
        check_architecture(T5Config(), "classification")


@pytest.mark.parametrize("params, message", [
    ({"dimension": 8}, r"parameter 'dimension' is not an embedding option; known: prompt_name, dimensions, normalize, truncate"),
    ({"dimensions": "8"}, r"parameter dimensions must be int, got '8'"),
    ({"dimensions": True}, r"parameter dimensions must be int, got True"),
    ({"normalize": "no"}, r"parameter normalize must be bool, got 'no'"),
])
def test_request_options_name_the_bad_parameter(params, message):
    from tritonize.contract.encoders import EmbedOptions

    with pytest.raises(ValueError, match=message):
        EmbedOptions.from_request(params)


def test_request_options_read_back_and_pick_the_prompt():
    from tritonize.contract.encoders import EmbedOptions

    prompts = Prompts({"query": "query: ", "passage": "passage: "}, "query")
    assert EmbedOptions.from_request({}).prompt(prompts) == "query: "  # the default prompt
    options = EmbedOptions.from_request({"prompt_name": "passage", "dimensions": 8, "normalize": False, "truncate": False})
    assert options == EmbedOptions("passage", 8, False, False) and options.prompt(prompts) == "passage: "
    with pytest.raises(ValueError, match=r"dimensions must be between 1 and 4 \(this model's embedding size\), got 8"):
        options.check_dimensions(4)
