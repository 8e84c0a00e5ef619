"""benchmarks/gpu_check.py runs end to end on CPU with --dry-run (tiny shapes, its own server), so the
script that will run on the GPU machine is itself tested; the wheel list it needs is complete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), r.stdout


def test_dry_run_measures_every_section_without_errors(dry_run):
    report, md, stdout = dry_run
    assert report["dry_run"] and not report["errors"], report["errors"]
    r, plan = report["results"], report["plan"]
    assert r["environment"]["device"] == "cpu" and plan["dtype"] == "float32"
    assert [x["batch"] for x in r["in_process"]["throughput"]] == plan["batch_sizes"]
    served = r["served"]["encoder"]
    assert {(x["batching"], x["concurrency"]) for x in served} == {(b, c) for b in ("on", "off") for c in plan["concurrency"]}
    assert all(x["requests_per_s"] > 0 and x["errors"] == 0 for x in served)
    assert all(x["model_step_avg_batch"] == 1.0 for x in served if x["batching"] == "off")  # off really is off
    assert [g["setting"] for g in r["served"]["gpt2"]] == [f"{n} streams" for n in plan["streams"]]
    assert all(g["tokens_per_s"] > 0 and g["errors"] == 0 for g in r["served"]["gpt2"])
    assert {h["setting"] for h in r["hf_generate"]} == {"one at a time", f"static batch {max(plan['streams'])}"}
    assert [v["concurrency"] for v in r["served"]["vits"]] == [c for c, _ in plan["speech"]]
    assert all(0 < v["rtf"] < 50 and v["errors"] == 0 for v in r["served"]["vits"])
    assert len(report["ratios"]) == 6  # every item-5 ratio, printed
    assert "DRY RUN" in md and "| encoder dynamic batching on / off at concurrency 64 |" in md and md in stdout


def test_dry_run_parity_of_the_torch_engines_in_float32_is_within_the_cpu_tolerances(dry_run):
    rows = dry_run[0]["results"]["parity"]
    f32 = [x for x in rows if x["dtype"] == "float32"]
    assert {x["check"].split(" (")[0] for x in f32} == {"encoder embedding", "encoder classification", "gpt2 greedy ids", "t5 greedy ids",
                                                       "vits waveform"}
    assert all(x["ok"] for x in f32), f32
    assert any(x["dtype"] == "bfloat16" for x in rows)  # reduced precision is measured and reported


@pytest.mark.unit
def test_plan_validates_its_fields():
    from benchmarks.gpu_check import Plan

    with pytest.raises(ValueError, match="device must be cpu or cuda, got 'tpu'"):
        Plan(device="tpu")
    with pytest.raises(ValueError, match="seconds and budget_s must be > 0"):
        Plan(seconds=0)


@pytest.mark.unit
def test_the_carried_wheel_list_is_complete_and_under_the_limit():
    listed = [line.split() for line in (ROOT / "benchmarks/gpu_wheels.txt").read_text().splitlines() if line and not line.startswith("#")]
    names = {n.split("-")[0].lower().replace("_", "-") for n, *_ in listed}
    # what the check imports beyond the GPU machine's Python: the server binary, the gRPC client, configs
    assert names == {"nvidia-pytriton", "tritonclient", "grpcio", "protobuf", "python-rapidjson", "packaging"}
    assert sum(int(size) for _, size, *_ in listed) < 64 * 2**20
    readme = (ROOT / "README.md").read_text()
    for name, *_ in listed:
        assert name in readme, f"README's GPU section does not list {name}"
    script = (ROOT / "benchmarks/gpu_check.sh").read_text()
    assert "gpu_wheels.txt" in script and "benchmarks.gpu_check" in script
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")]).returncode == 0
    assert re.search(r"^wheels/$", (ROOT / ".gitignore").read_text(), re.M)
