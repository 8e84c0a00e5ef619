"""Converter defects found by outside testing (issue 10): unsafe model names, a VITS pad token past its
embedding table, RoBERTa's position limit, conversion failures and library warnings on the terminal."""

import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tritonize.cli import app
from tritonize.converters.checkpoints import NAME_PATTERN, InvalidName, check_name, default_name
from tritonize.converters.quiet import library_output


# -- model names (item 3) ---------------------------------------------------------------------------
BAD_NAMES = ["../../x", "/abs", "a/b", "my model", "", ".hidden", "a..b", "Upper", "x" * 65, "name\n", "a\\b"]


@pytest.mark.unit
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_naming_the_field_and_the_pattern(name):
    with pytest.raises(InvalidName) as e:
        check_name(name)
    assert str(e.value).startswith(f"name {name!r} is not a valid model name") and NAME_PATTERN.pattern in str(e.value)


@pytest.mark.parametrize("hub_id", ["sentence-transformers/all-MiniLM-L6-v2", "facebook/mms-tts-eng", "gpt2", "google/flan-t5-small",
                                    "./My Checkpoint (v2)/", "Ünïcode/Ça-Va", "x" * 100, "---"])
@pytest.mark.unit
def test_default_names_match_the_pattern(hub_id):
    assert check_name(default_name(hub_id)) == default_name(hub_id)


@pytest.mark.unit
@pytest.mark.parametrize("family", ["bert", "gpt2", "t5", "tts"])
def test_every_converter_checks_the_name_before_writing_anything(family, tmp_path):
    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.generation.gpt2 import convert_gpt2
    from tritonize.converters.generation.t5 import convert_t5
    from tritonize.converters.speech.vits import convert_tts

    convert = {"bert": convert_bert, "gpt2": convert_gpt2, "t5": convert_t5, "tts": convert_tts}[family]
    repo = tmp_path / "a" / "repo"
    for name in ("../../escaped", str(tmp_path / "absolute"), "a/b"):
        with pytest.raises(InvalidName, match=r"must match \^\[a-z0-9\]"):
            convert(str(tmp_path / "no-such-checkpoint"), repository=repo, name=name, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing written, inside or outside the repository


@pytest.mark.unit
def test_cli_refuses_a_bad_name_in_one_paragraph(tmp_path):
    r = CliRunner().invoke(app, ["convert", "bert", "--model", str(tmp_path), "--name", "../../x", "-r", str(tmp_path / "repo")])
    assert r.exit_code == 1 and "Traceback (most recent call last)" not in r.output
    assert "name '../../x' is not a valid model name" in " ".join(r.output.split())
    assert not (tmp_path / "repo").exists()


# -- a VITS pad token outside the embedding table (item 7) ---------------------------------------
def test_vits_whose_pad_token_is_past_the_embedding_table_converts_and_serves_batched_rows(tmp_path):
    from transformers import AutoTokenizer, VitsModel

    from tritonize.converters.speech.tiny import VOCAB, build_tiny_vits
    from tritonize.converters.speech.vits import convert_tts, torch_waveform
    from tritonize.runtime.speech.engine_onnx import VitsEngine
    from tritonize.runtime.speech.voice import Voice

    checkpoint = build_tiny_vits(tmp_path / "voice", vocab=["_"] + VOCAB[1:])  # no "<pad>": the tokenizer adds one
    tok, model = AutoTokenizer.from_pretrained(checkpoint), VitsModel.from_pretrained(checkpoint).eval()
    assert tok.pad_token_id >= model.config.vocab_size  # the defect's precondition
    report = convert_tts(str(checkpoint), tmp_path / "repo", "padded-voice", log=lambda m: None)
    assert report.max_abs_error <= report.tolerance

    # The served engine batches rows of different lengths (padding them) and matches PyTorch row by row.
    engine = VitsEngine(tmp_path / "repo" / "padded-voice_model" / "1" / "model.onnx", threads=1, min_tokens=report_min_tokens(tmp_path))
    texts = ["hi", "a longer sentence than the first"]
    rows = [np.array(tok(t)["input_ids"], np.int64) for t in texts]
    voice = Voice(speaking_rate=1.0, noise_scale=0.667, noise_scale_duration=0.8, seed=3)
    for i, wave in enumerate(engine.run(rows, [voice, voice], [3, 4])):
        ref = torch_waveform(model, rows[i].tolist(), 3 + i, 0.667, 0.8, 1.0)
        assert wave.shape == ref.shape and float(np.abs(wave - ref).max()) <= report.tolerance


def report_min_tokens(tmp_path: Path) -> int:
    from tritonize.contract.files import read_manifest

    return read_manifest(tmp_path / "repo", "padded-voice")["pipeline"]["min_tokens"]


# -- RoBERTa's position limit (item 8) -----------------------------------------------------------------
@pytest.mark.parametrize("pad_id, tokenizer_limit, expected", [
    (4, 64, 61),  # 66 positions from 5 on: 61 tokens (the old "- 2" allowed 64 and ran past the table)
    (0, 10**6, 65),  # from 1 on: 65 tokens (the old "- 2" gave 64, one short)
])
def test_roberta_limit_is_positions_minus_pad_id_minus_one(pad_id, tokenizer_limit, expected, tmp_path):
    from tests.tiny_models import build_tiny_roberta_embedder
    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.contract.files import read_manifest

    checkpoint = build_tiny_roberta_embedder(tmp_path / "ckpt", pad_id=pad_id, max_positions=66, model_max_length=tokenizer_limit)
    # The parity check runs a text longer than the limit, truncated to it: past the table, PyTorch would fail.
    report = convert_bert(str(checkpoint), "embedding", tmp_path / "repo", "roberta", log=lambda m: None)
    assert report.max_abs_error <= report.tolerance
    assert read_manifest(tmp_path / "repo", "roberta")["pipeline"]["max_length"] == expected


# -- failures and library output (items 7 and 15) ---------------------------------------------------
@pytest.mark.unit
def test_library_output_goes_to_the_log_file(tmp_path, capfd):
    path = tmp_path / "convert.log"
    with library_output(path):
        warnings.warn("a tracer warning", UserWarning)
        logging.getLogger("transformers.modeling_utils").warning("requires accelerate")
        logging.getLogger("optimum.exporters").warning("optimum says")
        print("python stderr", file=sys.stderr)
        os.write(2, b"C-level stderr\n")
        print("progress line")  # stdout is ours: it stays
    out, err = capfd.readouterr()
    assert out == "progress line\n" and err == ""
    text = path.read_text()
    for line in ("a tracer warning", "requires accelerate", "optimum says", "python stderr", "C-level stderr"):
        assert line in text
    with pytest.raises(RuntimeError, match="boom"), library_output(path):
        raise RuntimeError("boom")
    assert "Traceback" in path.read_text() and "RuntimeError: boom" in path.read_text()
    os.write(2, b"after\n")  # stderr is back
    assert capfd.readouterr().err == "after\n"
    with library_output(tmp_path / "quiet.log"):
        pass
    assert not (tmp_path / "quiet.log").exists()  # nothing said, no file


@pytest.mark.unit
def test_cli_conversion_failure_is_one_paragraph_with_the_log_path(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{ not json")
    r = CliRunner().invoke(app, ["convert", "bert", "--model", str(tmp_path / "broken"), "-r", str(tmp_path / "repo")])
    assert r.exit_code == 1 and "Traceback (most recent call last)" not in r.output
    text = " ".join(r.output.split())
    assert text.startswith(f"Conversion of {tmp_path / 'broken'} failed:")
    log = Path(text.split("Details and library messages: ")[1].strip())
    assert "Traceback" in log.read_text()


def test_cli_conversion_shows_progress_lines_and_keeps_library_warnings_in_the_log(tmp_path):
    from tests.tiny_models import build_tiny_bert_classifier

    checkpoint = build_tiny_bert_classifier(tmp_path / "ckpt")
    args = ["convert", "bert", "--model", str(checkpoint), "--task", "classification", "-r", str(tmp_path / "repo")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for stage in ("exporting", "ORT transformer fusions", "max abs error vs PyTorch", "wrote"):
        assert stage in text
    assert "Warning" not in text.split("library warnings and logs:")[0]
    log = Path(text.split("library warnings and logs: ")[1].split(" ")[0])
    assert "TracerWarning" in log.read_text()
