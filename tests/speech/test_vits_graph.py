"""The VITS export's graph rewrites (1-D Convs as unit-height 2-D ones; elementwise ops kept 4-D
between them) and the rewritten graph's parity."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tritonize.converters.speech.squeeze_sinking import sink_squeezes
from tritonize.converters.speech.unit_height import conv1d_as_conv2d, one_d_convs
from tests.conftest import VOICE


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # NCHWc included, as served
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _export(module, x, path, opset: int = 17) -> onnx.ModelProto:
    import torch

    torch.onnx.export(module.eval(), (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 2: "time"}, "y": {0: "batch", 2: "time"}}, opset_version=opset, dynamo=False)
    return onnx.load(str(path))


def _convs_of_every_kind():
    """Dilation, stride, groups, no bias, a transposed conv with output padding, channels that do and
    do not fit ORT's NCHWc blocks (16 and 3)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(3, 16, 5, padding=6, dilation=3), nn.LeakyReLU(0.1),
        nn.Conv1d(16, 32, 4, stride=2, padding=1, groups=2, bias=False),
        nn.ConvTranspose1d(32, 16, 8, stride=4, padding=2, output_padding=1), nn.Tanh(),
        nn.Conv1d(16, 1, 7, padding=3),
    )


@pytest.mark.unit
def test_rewrite_leaves_no_1d_conv_and_the_same_outputs(tmp_path):
    import torch

    torch.manual_seed(0)
    model = _export(_convs_of_every_kind(), torch.randn(2, 3, 40), tmp_path / "convs.onnx")
    assert len(one_d_convs(model)) == 4
    x = np.random.default_rng(0).standard_normal((3, 3, 57)).astype(np.float32)  # other batch and length than exported
    before = _session(model).run(None, {"x": x})[0]
    assert conv1d_as_conv2d(model) == 4
    onnx.checker.check_model(model)
    assert one_d_convs(model) == []
    assert all(len(t.dims) != 3 for t in model.graph.initializer)  # the 1-D weights are gone, not kept twice
    after = _session(model).run(None, {"x": x})[0]
    assert after.shape == before.shape == (3, 1, 4 * 28 + 1)
    np.testing.assert_allclose(after, before, atol=1e-5)


class _MaskedResidual:
    """HiFi-GAN's pattern: masked LeakyRelu -> Conv -> LeakyRelu -> Conv -> residual Add, a mask of
    rank 3 broadcast over channels, a scalar divide, a 1-D bias, and a Shape read of a Conv output."""

    @staticmethod
    def module():
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.c1, self.c2 = nn.Conv1d(16, 16, 3, padding=3, dilation=3), nn.Conv1d(16, 16, 5, padding=2)
                self.bias = nn.Parameter(torch.randn(1))

            def forward(self, x):
                mask = (torch.arange(x.shape[2]).view(1, 1, -1) < x.shape[2] - 3).to(x.dtype)
                h = self.c1(nn.functional.leaky_relu(x, 0.1) * mask)
                h = self.c2(nn.functional.leaky_relu(h, 0.1) * mask) + x
                return torch.tanh(h / 3.0 + self.bias) * h.shape[2]

        return Block()


@pytest.mark.unit
def test_sinking_squeezes_fuses_conv_activations_and_keeps_outputs(tmp_path):
    import torch

    torch.manual_seed(0)
    model = _export(_MaskedResidual.module(), torch.randn(2, 16, 30), tmp_path / "block.onnx")
    x = np.random.default_rng(1).standard_normal((3, 16, 41)).astype(np.float32)
    conv1d_as_conv2d(model)
    before = _session(model).run(None, {"x": x})[0]
    # after the first Conv: LeakyRelu, mask Mul, residual Add, Div, bias Add, Tanh, the Mul by the Shape
    assert sink_squeezes(model) == 7
    onnx.checker.check_model(model)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    # only the first Conv (reading the graph input) is fed by an Unsqueeze; the second reads the Mul
    assert [producers.get(n.input[0]) for n in model.graph.node if n.op_type == "Conv"] == ["Unsqueeze", "Mul"]
    # the first Conv's output reaches its LeakyRelu directly, so ORT can fuse the two
    assert [producers.get(n.input[0], "input") for n in model.graph.node if n.op_type == "LeakyRelu"] == ["input", "Conv"]
    after = _session(model).run(None, {"x": x})[0]
    assert after.shape == before.shape == (3, 16, 41)
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.unit
def test_rewrite_refuses_opsets_without_squeeze_axes_inputs(tmp_path):
    import torch

    model = _export(torch.nn.Conv1d(2, 2, 3), torch.randn(1, 2, 8), tmp_path / "old.onnx", opset=11)
    with pytest.raises(ValueError, match="opset >= 13.*opset 11"):
        conv1d_as_conv2d(model)


def test_served_vits_graph_is_2d_and_equals_pytorch_for_a_padded_batch(built):
    """The voice's model.onnx, a batch of different lengths padded as the engine pads it, vs VitsModel
    one sentence at a time with the same seeds: the converter's tolerance, each row's own length."""
    import torch
    from transformers import AutoTokenizer, VitsModel

    from tritonize.converters.speech.vits import WAVE_TOLERANCE, torch_waveform
    from tritonize.runtime.pooling import pad_vits_batch

    repo = built["repository"]
    graph = onnx.load(str(repo / f"{VOICE}_model" / "1" / "model.onnx"))
    assert one_d_convs(graph) == [] and sum(n.op_type == "Conv" for n in graph.graph.node) > 10
    min_tokens = json.loads((repo / VOICE / "tritonize.json").read_text())["pipeline"]["min_tokens"]
    model = VitsModel.from_pretrained(built["tiny_vits"]).eval()
    tok = AutoTokenizer.from_pretrained(built["tiny_vits"])
    texts = ["a much longer sentence than the other ones in this batch", "hi", "speech from triton", "ok then"]
    rows = [tok(t)["input_ids"] for t in texts]
    ids, mask = pad_vits_batch([np.array(r) for r in rows], min_tokens)
    params = np.array([(0.667, 0.8, 1.0), (0.3, 0.5, 1.3), (0.0, 0.0, 0.8), (1.0, 1.0, 1.1)], np.float32)
    seeds = np.array([3, 5, 8, 13], np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "seed": seeds, "noise_scale": params[:, 0],
             "noise_scale_duration": params[:, 1], "speaking_rate": params[:, 2]}
    waves, lengths = _session(graph).run(None, feeds)
    assert len(set(lengths.tolist())) == len(texts)  # really different lengths, so padding is exercised
    with torch.inference_mode():
        for i, row in enumerate(rows):
            ref = torch_waveform(model, row, int(seeds[i]), *map(float, params[i]))
            assert int(lengths[i]) == len(ref)
            assert np.abs(waves[i, : len(ref)] - ref).max() <= WAVE_TOLERANCE


def _stage_module(tiles: int):
    """One HiFi-GAN stage (two residual blocks, dilations up to 5) of a small VITS vocoder, through
    the export's masked code, with its residual blocks on `tiles` time tiles (1: untiled)."""
    import torch
    from transformers import VitsConfig, VitsModel

    from tritonize.converters.speech.masking import TiledMaskedHifiGan
    from tritonize.converters.speech.time_tiles import stack_radius, tiled

    torch.manual_seed(0)
    config = VitsConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, flow_size=16, spectrogram_bins=33,
                        upsample_initial_channel=32, upsample_rates=[4], upsample_kernel_sizes=[8], resblock_kernel_sizes=[3, 7],
                        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]])
    vocoder = TiledMaskedHifiGan(VitsModel(config).decoder, {})
    blocks = list(vocoder.g.resblocks[:2])

    class Stage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vocoder = vocoder

        def forward(self, h, mask):
            return tiled(lambda x, m: self.vocoder._stage(blocks, x, m), h, mask, tiles, stack_radius(blocks))

    return Stage().eval(), stack_radius(blocks)


@pytest.mark.parametrize("tiles", [2, 4])
def test_time_tiles_equal_the_untiled_stage_in_ort(tmp_path, tiles):
    """Tiled vs untiled export of the same stage, run in ORT on a masked batch of two rows, at lengths
    below, near and far above the tile count and the halo: the same output at every position."""
    import torch

    graphs = {}
    for n in (1, tiles):
        module, halo = _stage_module(n)
        h, mask = torch.randn(2, 16, 50), torch.ones(2, 1, 50)
        path = tmp_path / f"stage{n}.onnx"
        torch.onnx.export(module, (h, mask), str(path), input_names=["h", "mask"], output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"h": {0: "b", 2: "t"}, "mask": {0: "b", 2: "t"}, "y": {0: "b", 2: "t"}})
        graphs[n] = _session(onnx.load(str(path)))
    assert halo == 3 * (1 + 3 + 5) + 3 * 3  # the 7-tap block is the deeper: convs1 dilated 1, 3, 5; convs2 undilated
    rng = np.random.default_rng(0)
    for length in (3, tiles * halo + 1, 997):
        h = rng.standard_normal((2, 16, length)).astype(np.float32)
        mask = np.ones((2, 1, length), np.float32)
        mask[1, :, (2 * length) // 3:] = 0  # the shorter row of a padded batch
        h *= mask
        plain, cut = (graphs[n].run(None, {"h": h, "mask": mask})[0] for n in (1, tiles))
        assert cut.shape == plain.shape == (2, 16, length)
        np.testing.assert_allclose(cut, plain, atol=1e-5)


@pytest.mark.unit
def test_time_tile_halo_is_the_stacks_receptive_radius():
    """The halo is tight: one sample less and the tiles' cut edges reach the kept samples."""
    import torch

    from tritonize.converters.speech.time_tiles import tiled

    module, halo = _stage_module(1)
    blocks = list(module.vocoder.g.resblocks[:2])
    h, mask = torch.randn(1, 16, 300), torch.ones(1, 1, 300)
    with torch.no_grad():
        plain = module(h, mask)
        error = {n: (tiled(lambda x, m: module.vocoder._stage(blocks, x, m), h, mask, 4, n) - plain).abs().max().item()
                 for n in (halo, halo - 1)}
    assert error[halo] < 1e-5 and error[halo - 1] > 1e-4
