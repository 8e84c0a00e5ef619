"""Bad input to `bench`, `plan` and `deploy`: one line naming the bad value and what is valid, exit 1, no
traceback, and nothing measured (issue 28, item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tritonize.cli import app
from tritonize.planner.scenarios import Scenario, WordCounts
from tritonize.server.launcher import free_port
from tests.conftest import CLASSIFIER, EMBEDDER

SCENARIO = {"name": "t", "pipeline": "embed", "model": "m", "words": {"median": 8, "sigma": 0.5, "min": 2, "max": 32}}


def refused(args: list[str], *expected: str, alone: bool = True):
    """The command exits 1 through typer.Exit (not an exception), its last line (with `alone`, its only
    line) holding every expected fragment."""
    r = CliRunner().invoke(app, args)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.exit_code, r.exception, r.output)
    assert "Traceback" not in r.output and lines and (len(lines) == 1 or not alone), r.output
    for fragment in expected:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A repository folder holding two pipelines and a step (config files only: nothing is served from it)."""
    for name in ("alpha", "alpha_model", "beta"):
        (tmp_path / "repo" / name).mkdir(parents=True)
        (tmp_path / "repo" / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    return tmp_path / "repo"


def scenario_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(text)
    return str(path)


@pytest.mark.unit
def test_an_unknown_scenario_lists_the_known_ones(tmp_path):
    refused(["bench", "--scenario", "embed-mixx", "--out", str(tmp_path)],
            "--scenario 'embed-mixx'", "did you mean 'embed-mix'", "known scenarios: chat-mix, embed-mix, embed-short, generate-gpt2")
    refused(["plan", "--scenario", str(tmp_path), "--out", str(tmp_path / "o")], f"--scenario {tmp_path}: a directory")


@pytest.mark.unit
def test_a_misspelled_scenario_field_is_named_with_the_valid_fields(tmp_path):
    bad = scenario_file(tmp_path, json.dumps({**SCENARIO, "modle": "x"}))
    refused(["bench", "--scenario", bad], "unknown scenario field 'modle'", "did you mean 'model'",
            "valid fields: name, pipeline, model, words, rows_per_request")
    bad = scenario_file(tmp_path, json.dumps({**SCENARIO, "words": {"medain": 3}}))
    refused(["bench", "--scenario", bad], "unknown words field 'medain'", "valid fields: median, sigma, min, max")
    bad = scenario_file(tmp_path, json.dumps({**SCENARIO, "pipeline": "embedd"}))
    refused(["plan", "--scenario", bad], "field 'pipeline' is 'embedd'", "must be one of chat, classify, embed, generate")
    bad = scenario_file(tmp_path, json.dumps({k: v for k, v in SCENARIO.items() if k != "model"}))
    refused(["bench", "--scenario", bad], "scenario field 'model' is missing")
    bad = scenario_file(tmp_path, json.dumps({**SCENARIO, "rows_per_request": 0}))
    refused(["bench", "--scenario", bad], "field 'rows_per_request' is 0; must be a whole number >= 1")


@pytest.mark.unit
def test_a_trailing_comma_in_a_scenario_names_file_line_and_column(tmp_path):
    bad = scenario_file(tmp_path, '{\n  "name": "t",\n  "pipeline": "embed",\n  "model": "m",\n}\n')
    refused(["bench", "--scenario", bad], f"{bad}:5:1: not valid JSON")


@pytest.mark.unit
@pytest.mark.parametrize("option, value, expected", [
    ("--users", "1,x", "--users '1,x': 'x' is not a whole number; give comma-separated whole numbers >= 1"),
    ("--users", "0,4", "--users '0,4': 0 is below 1"),
    ("--users", ",", "give comma-separated whole numbers >= 1"),
])
def test_bad_load_levels_are_refused(tmp_path, option, value, expected):
    refused(["bench", option, value, "--out", str(tmp_path)], expected)
    refused(["plan", option, value, "--out", str(tmp_path)], expected)


@pytest.mark.unit
@pytest.mark.parametrize("args, expected", [
    (["--slo-ms", "-5"], "--slo-ms -5: must be > 0"),
    (["--slo-ms", "0"], "--slo-ms 0: must be > 0"),
    (["--target-rps", "0"], "--target-rps 0: must be > 0"),
    (["--headroom", "-0.5"], "--headroom -0.5: must be >= 0"),
    (["--percentile", "90"], "--percentile 90: must be 50, 95 or 99"),
    (["--max-batch-size", "16,x"], "--max-batch-size '16,x': 'x' is not a whole number"),
    (["--queue-delay-us", "-1"], "--queue-delay-us '-1': -1 is below 0"),
    (["--confirm", "--confirm-seconds", "0"], "--confirm-seconds 0: must be > 0"),
])
def test_impossible_plan_values_are_refused(tmp_path, repo, args, expected):
    refused(["plan", "--repository", str(repo), "--model", "alpha", "--no-pin", *args, "--out", str(tmp_path / "o")], expected)
    assert not (tmp_path / "o").exists()


@pytest.mark.unit
def test_a_confirmation_level_lasts_three_levels_and_at_least_30_s():
    from tritonize.planner.inputs import confirm_seconds

    assert confirm_seconds(8, None) == 30 and confirm_seconds(20, None) == 60 and confirm_seconds(8, 2) == 2


@pytest.mark.unit
def test_threads_above_the_pinned_cores_are_refused(tmp_path, repo):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("--pin needs two cores")
    refused(["plan", "--repository", str(repo), "--model", "alpha", "--threads", "1,2", "--out", str(tmp_path / "o")],
            "--threads 2: the server is pinned to 1 core(s) (0); give --threads <= 1 or --no-pin")
    cores = len(os.sched_getaffinity(0))
    refused(["plan", "--repository", str(repo), "--model", "alpha", "--no-pin", "--threads", str(cores + 1), "--out", str(tmp_path / "o")],
            f"--threads {cores + 1}: this machine gives the server {cores} core(s); give --threads <= {cores}")


@pytest.mark.unit
def test_a_model_missing_from_the_repository_lists_its_pipelines(tmp_path, repo):
    refused(["bench", "--repository", str(repo), "--model", "no-such-model", "--out", str(tmp_path)],
            "--model 'no-such-model': not in", "its models: alpha, beta")
    refused(["plan", "--repository", str(repo), "--model", "alpha,alpah", "--no-pin", "--out", str(tmp_path)],
            "--model 'alpah'", "did you mean 'alpha'", "its models: alpha, beta")
    refused(["bench", "--repository", str(tmp_path / "nowhere"), "--out", str(tmp_path)], "no such folder")


@pytest.mark.unit
def test_a_dead_url_stops_before_any_load(tmp_path):
    port = free_port()
    started = time.monotonic()
    for protocol in ("grpc", "http"):
        refused(["bench", "--url", f"127.0.0.1:{port}", "--protocol", protocol, "--out", str(tmp_path / "o")],
                f"--url 127.0.0.1:{port}: no Triton server answers over {protocol}", "start one")
    assert time.monotonic() - started < 30 and not (tmp_path / "o").exists()


@pytest.mark.unit
def test_a_plan_folder_is_refused_naming_its_results_file(tmp_path):
    (tmp_path / "plan").mkdir()
    refused(["deploy", "kubernetes", "--plan", str(tmp_path / "plan"), "--image", "x", "--out", str(tmp_path / "k")],
            f"--plan {tmp_path / 'plan'}: a directory", "writes results.json")
    (tmp_path / "plan" / "results.json").write_text("{}")
    refused(["deploy", "kubernetes", "--plan", str(tmp_path / "plan"), "--image", "x", "--out", str(tmp_path / "k")],
            f"give the plan's results file ({tmp_path / 'plan' / 'results.json'})")
    refused(["plan", "--from", str(tmp_path / "plan"), "--out", str(tmp_path / "o")], f"--from {tmp_path / 'plan'}: a directory")
    (tmp_path / "bad.json").write_text('{"points": [],}')
    refused(["plan", "--from", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")], f"{tmp_path / 'bad.json'}:1:15: not valid JSON")
    refused(["deploy", "kubernetes", "--plan", str(tmp_path / "bad.json"), "--image", "x", "--out", str(tmp_path / "k")],
            f"{tmp_path / 'bad.json'}:1:15: not a JSON plan file")
    assert not (tmp_path / "k").exists()


@pytest.mark.unit
def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    """What a user's shell sees (not the test runner's capture): stderr holds one line, stdout nothing."""
    p = subprocess.run([sys.executable, "-m", "tritonize", "bench", "--scenario", "embed-mixx", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "60"})
    assert p.returncode == 1 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and "known scenarios: chat-mix, embed-mix" in p.stderr  # not wrapped at 60 columns


@pytest.mark.unit
def test_plan_from_regenerates_every_line_of_its_report(tmp_path):
    """`plan --from` with another SLO: the saved plan's confirmation (of another recommendation) is gone
    from results.json, the report and the terminal; the new recommendation is in all three."""
    from tritonize.planner.capacity import PlanResults, Point

    old = "predicted 344.0 req/s, confirmation run 275.0 req/s (0.80x)"
    pts = [Point("a", u, r, lat / 2, lat, lat * 1.5, requests=100) for u, r, lat in [(1, 100, 10), (2, 180, 20), (4, 260, 40)]]
    saved = PlanResults({"name": "t"}, {"scenario": "t", "confirmation": old}, pts, [], ["a"], {"a": {"model": "m"}},
                        {"system": "a", "max_rps": 344.0, "replicas": 4, "note": "4 replica(s) of 'a' ..."},
                        {"system": "a", "predicted_rps": 344.0, "confirmed_rps": 275.0, "points": [], "runs": []})
    saved.save(tmp_path / "old" / "results.json")
    r = CliRunner().invoke(app, ["plan", "--from", str(tmp_path / "old" / "results.json"), "--slo-ms", "1", "--out", str(tmp_path / "new")])
    assert r.exit_code == 0, r.output
    new = json.loads((tmp_path / "new" / "results.json").read_text())
    assert new["confirmation"] is None and "confirmation" not in new["setup"]
    assert new["recommendation"]["system"] is None and new["recommendation"]["slo_ms"] == 1
    report = (tmp_path / "new" / "report.md").read_text() + (tmp_path / "new" / "report.html").read_text()
    for text in (report, r.output):
        assert "344" not in text and "275" not in text and "4 replica(s)" not in text, text
    assert "no configuration meets p95 <= 1 ms" in report and "confirmation is not carried over" in report


@pytest.mark.unit
def test_plan_from_keeps_the_saved_goal_it_is_not_told_to_change(tmp_path):
    """`plan --from R --slo-ms 30` re-derives the SLO alone: the saved plan's target rate, headroom and
    percentile stay (not the defaults 1000, 0.25, 95)."""
    import math

    from tritonize.planner.capacity import PlanResults, Point

    pts = [Point("a", u, r, lat / 2, lat, lat * 1.5, requests=100) for u, r, lat in [(1, 100, 10), (2, 180, 20), (4, 260, 40)]]
    goal = {"slo_ms": 50.0, "percentile": 99, "target_rps": 400.0, "headroom": 0.5}
    PlanResults({"name": "t"}, {"scenario": "t"}, pts, [], ["a"], {"a": {"model": "m"}}, {"system": "a", **goal}).save(tmp_path / "old" / "results.json")
    r = CliRunner().invoke(app, ["plan", "--from", str(tmp_path / "old" / "results.json"), "--slo-ms", "30", "--out", str(tmp_path / "new")])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "new" / "results.json").read_text())["recommendation"]
    assert (rec["slo_ms"], rec["percentile"], rec["target_rps"], rec["headroom"]) == (30, 99, 400, 0.5)
    assert rec["system"] == "a" and rec["replicas"] == math.ceil(400 * 1.5 / rec["max_rps"])


@pytest.mark.unit
def test_output_names_are_whole_readable_and_unique():
    from tritonize.planner.inputs import unique_slugs

    a = "triton all-minilm-l6-v2-int8 (batch<=16, delay 0us, 1 inst, 1 thr, and a long tail past sixty characters) A"
    b = a[:-1] + "B"
    slugs = unique_slugs([a, b, a, "x" * 300])
    assert len(set(slugs)) == 4 and slugs[0].startswith("triton_all-minilm-l6-v2-int8_batch_le_16_delay_0us")
    assert slugs[0].endswith("_A") and slugs[1].endswith("_B") and slugs[2] == slugs[0] + "_2"
    assert len(slugs[3]) == 120 and slugs[3] != unique_slugs(["x" * 299])[0]  # cut names keep a hash of the whole


# -- against the real server ---------------------------------------------------------------------------
def test_a_model_the_server_lacks_stops_before_any_load_listing_its_models(server, tmp_path):
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        started = time.monotonic()
        line = refused(["bench", "--url", url, "--protocol", protocol, "--model", "no-such-model", "--users", "4", "--seconds", "30",
                        "--out", str(tmp_path / protocol)], f"--model 'no-such-model': the server at {url} does not serve it; its models: ")
        assert time.monotonic() - started < 15 and not (tmp_path / protocol).exists()  # no 30 s of failures
        models = line.split("its models: ")[1].split(", ")
        assert EMBEDDER in models and CLASSIFIER in models and f"{EMBEDDER}_model" not in models  # pipelines, not their steps


def test_a_run_in_which_every_request_failed_exits_non_zero(server, tmp_path):
    """A live server and a served model, but every request is invalid UTF-8: the load runs, is reported,
    and the command fails naming the count and Triton's error."""
    path = Scenario(name="all-bad", pipeline="embed", model=EMBEDDER, words=WordCounts(median=4, min=2, max=8), pool_size=20,
                    bad_every=1).save(tmp_path / "bad.json")
    line = refused(["bench", "--url", server.grpc_url, "--http-url", server.http_url, "--scenario", str(path), "--users", "1",
                    "--seconds", "2", "--out", str(tmp_path / "out")], "every request failed (", "UTF-8", f"{EMBEDDER} at {server.grpc_url}",
                   alone=False)  # after the load's table and report
    n = int(line.split("every request failed (")[1].split(" of ")[0])
    assert n > 0 and (tmp_path / "out" / "results.json").exists()
    assert server.is_ready()


# -- convert --quantize never replaces the fp32 model (issue 28, item 10) -----------------------------
def test_quantize_without_a_name_writes_name_int8_beside_the_fp32_model(tmp_path):
    """The fp32 conversion of a checkpoint is NAME; `--quantize` alone writes NAME-int8 and leaves NAME as
    it was; `--name NAME --quantize` over that fp32 model is refused and changes nothing. (The tiny BERT
    as an embedder: its int8 meets the embedding floor, about 2 s for both conversions.)"""
    from tritonize.contract.files import read_manifest
    from tests.tiny_models import build_tiny_bert_classifier

    checkpoint = build_tiny_bert_classifier(tmp_path / "tiny-bert-cls")  # default served name: tiny-bert-cls
    repo = tmp_path / "repo"
    common = ["convert", "bert", "--model", str(checkpoint), "--repository", str(repo)]
    assert CliRunner().invoke(app, common).exit_code == 0
    fp32 = read_manifest(repo, "tiny-bert-cls")
    assert fp32 and fp32["report"]["quantized"] is False
    before = {p: p.read_bytes() for p in (repo / "tiny-bert-cls").rglob("*") if p.is_file()}
    r = CliRunner().invoke(app, common + ["--quantize"])
    assert r.exit_code == 0, r.output
    assert "serving it as tiny-bert-cls-int8, beside the fp32 tiny-bert-cls" in " ".join(r.output.split())
    assert read_manifest(repo, "tiny-bert-cls-int8")["report"]["quantized"] is True
    assert {p: p.read_bytes() for p in (repo / "tiny-bert-cls").rglob("*") if p.is_file()} == before
    refused(common + ["--quantize", "--name", "tiny-bert-cls"],
            "--name tiny-bert-cls:", "holds an fp32 conversion that --quantize would replace", "(default: tiny-bert-cls-int8) or add --force")
    assert {p: p.read_bytes() for p in (repo / "tiny-bert-cls").rglob("*") if p.is_file()} == before


# -- options that set what they say (issue 28, item 7) ---------------------------------------------------
def test_max_batch_size_sets_tritons_max_batch_size_on_the_served_step(tmp_path):
    """A plan's 'batch<=4' config serves its model step with Triton's max_batch_size 4 (what Model
    Analyzer users read), max_rows_per_run following; the ensemble above it is lowered so Triton loads it,
    the tokenizer step is left as converted; the served server reports those configs and answers."""
    import tritonclient.grpc as grpcclient

    from tritonize.converters.encoders.bert import convert_bert
    from tritonize.converters.repository import Batching
    from tritonize.contract.model_config import read_config
    from tritonize.planner.systems import TritonVariant, Variant, variant_configs
    from tests.tiny_models import build_tiny_bert_classifier

    checkpoint = build_tiny_bert_classifier(tmp_path / "tiny")
    repo = tmp_path / "repo"
    convert_bert(str(checkpoint), "embedding", repo, "tiny", batching=Batching(max_batch_size=32, preferred_batch_sizes=[8, 16]),
                 flavour="python", log=lambda m: None)
    changed = variant_configs(repo, "tiny", Variant(max_batch_size=4))
    assert set(changed) == {"tiny_model", "tiny"}  # the step and its ensemble; never the tokenizer
    step = changed["tiny_model"]
    assert step.max_batch_size == 4 and step.parameters["max_rows_per_run"].string_value == "4"
    assert list(step.dynamic_batching.preferred_batch_size) == []  # 8 and 16 exceed 4
    assert changed["tiny"].max_batch_size == 4 and read_config(repo / "tiny" / "config.pbtxt").max_batch_size == 32  # the source stays
    assert set(variant_configs(repo, "tiny", Variant(max_batch_size=64))) == {"tiny_model"}  # above the ensemble: not raised

    system = TritonVariant(repo, "tiny", Variant(max_batch_size=4), tmp_path / "scratch")
    url = system.start()
    try:
        with grpcclient.InferenceServerClient(url) as c:
            served = {m: c.get_model_config(m, as_json=True)["config"] for m in ("tiny", "tiny_model", "tiny_tokenizer")}
            text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            text.set_data_from_numpy(np.array([[b"hello there"]], dtype=object))
            assert c.infer("tiny", [text]).as_numpy("EMBEDDING").shape[0] == 1
    finally:
        system.stop()
    assert int(served["tiny_model"]["max_batch_size"]) == 4 and int(served["tiny"]["max_batch_size"]) == 4
    assert int(served["tiny_tokenizer"]["max_batch_size"]) == 32
    assert served["tiny_model"]["parameters"]["max_rows_per_run"]["string_value"] == "4"
