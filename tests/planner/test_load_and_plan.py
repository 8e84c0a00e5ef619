"""Locust against the real server, the planner's SLO search, and a small plan end to end."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tritonize.planner.load import run_locust
from tritonize.planner.capacity import Point, max_throughput_under_slo, monotone, recommend
from tritonize.planner.scenarios import Scenario, WordCounts
from tests.conftest import CLASSIFIER, EMBEDDER


def scenario(tmp_path: Path, **kw) -> Path:
    sc = Scenario(name="test", pipeline=kw.pop("pipeline", "embed"), model=kw.pop("model", EMBEDDER),
                  words=WordCounts(median=8, sigma=0.5, min=2, max=32), pool_size=200, **kw)
    return sc.save(tmp_path / "scenario.json")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_headless_locust_run_records_every_request(server, tmp_path, protocol):
    host = server.grpc_url if protocol == "grpc" else server.http_url
    r = run_locust(scenario(tmp_path), host, protocol, users=2, seconds=3, out_prefix=tmp_path / "run", system="triton",
                   triton_http=server.http_url, triton_metrics=server.metrics_url)
    with open(tmp_path / "run_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["embed"]["Request Count"]) > 20 and int(rows["embed"]["Failure Count"]) == 0
    assert r.failures == 0 and r.rps > 5 and 0 < r.p50_ms <= r.p95_ms <= r.p99_ms
    assert (tmp_path / "run.html").stat().st_size > 1000
    step = r.triton[f"{EMBEDDER}_model"]  # Triton's own view of the same window
    assert step["inferences"] >= r.requests - 4 and step["compute_infer_ms"] > 0 and step["avg_batch"] >= 1


def test_bad_requests_are_counted_as_failures(server, tmp_path):
    r = run_locust(scenario(tmp_path, bad_every=5), server.grpc_url, "grpc", users=2, seconds=3,
                   out_prefix=tmp_path / "bad", system="triton")
    assert r.failures > 0 and r.requests > r.failures
    assert abs(r.failures / r.requests - 0.2) < 0.1  # one request in five is bad
    with open(tmp_path / "bad_failures.csv") as f:
        assert "UTF-8" in f.read()
    assert server.is_ready()


def curve(system, pts):
    return [Point(system, u, rps, lat / 2, lat, lat * 1.5) for u, rps, lat in pts]


@pytest.mark.unit
def test_slo_search_interpolates_at_the_crossing():
    pts = curve("a", [(1, 100, 10), (2, 180, 20), (4, 260, 40), (8, 300, 80)])
    # 50 ms lies a third of the way from (260 rps, 40 ms) to (300 rps, 80 ms) -> 260 + 40 * 0.25 = 270
    assert max_throughput_under_slo(pts, 50, 95) == pytest.approx(270)
    assert max_throughput_under_slo(pts, 40, 95) == pytest.approx(260)  # exactly on the SLO counts
    assert max_throughput_under_slo(pts, 5, 95) == 0.0  # never met
    assert max_throughput_under_slo(pts, 500, 95) == pytest.approx(300)  # always met: the top measured rate


@pytest.mark.unit
def test_slo_search_stops_at_the_first_breach_and_ignores_failures():
    noisy = curve("a", [(1, 100, 10), (2, 150, 90), (4, 400, 30)])  # the later 'pass' under overload is noise
    assert max_throughput_under_slo(noisy, 50, 95) == pytest.approx(100 + 50 * 40 / 80)
    failing = [Point("a", 1, 100, 5, 10, 15), Point("a", 2, 200, 5, 10, 15, failures=3)]
    assert max_throughput_under_slo(failing, 50, 95) == pytest.approx(100)
    # no gain: no interpolation, and the faster window pools with the slower one at higher load
    assert max_throughput_under_slo(curve("a", [(1, 100, 10), (2, 90, 60)]), 50, 95) == pytest.approx(95)


@pytest.mark.unit
def test_slo_search_reads_rates_off_their_non_decreasing_fit():
    """A lucky window is not capacity: measured 242, 178, 186 req/s at 2, 4, 8 users (all within the SLO;
    plan-mix, session 4), the capacity is their pooled mean, which the confirmation run (201) agreed with."""
    assert monotone([182, 242, 178, 186, 191]) == pytest.approx([182] + [797 / 4] * 4)
    assert monotone([1, 2, 3]) == [1, 2, 3] and monotone([]) == []
    pts = curve("a", [(1, 182, 8), (2, 242, 10), (4, 178, 26), (8, 186, 46), (16, 191, 100)])
    assert max_throughput_under_slo(pts, 50, 95) == pytest.approx(797 / 4)  # flat fit at the breach: no interpolation
    assert max_throughput_under_slo(pts, 20, 95) == pytest.approx(210)  # the breach at 4 users pools 2 and 4 users
    levels_after_the_breach = pts + curve("a", [(32, 50, 400)])  # overload collapse is not fitted
    assert max_throughput_under_slo(levels_after_the_breach, 50, 95) == pytest.approx(797 / 4)


@pytest.mark.unit
def test_sweep_measures_every_system_at_a_level_before_the_next_level():
    from tritonize.planner.sweep import measurement_order

    order = measurement_order(3, 2)
    assert order == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0)]  # the first system rotates
    assert sorted(order) == [(lv, s) for lv in range(2) for s in range(3)]  # each pair once
    twice = measurement_order(3, 2, rounds=2)
    assert twice[:6] == order and [lv for lv, _ in twice[6:]] == [1, 1, 1, 0, 0, 0]  # round 2 walks down
    assert sorted(twice) == sorted(order * 2)
    assert [s for _, s in twice[6:9]] == [2, 1, 0]  # ... and the systems the other way round

    def predecessors(order):
        return {(b, a) for (la, a), (lb, b) in zip(order, order[1:]) if la == lb}

    # every system follows both of the others at some level (with one cyclic order, only one of them)
    rounds = predecessors(measurement_order(3, 5, rounds=2))
    assert all({p for s, p in rounds if s == s0} == {0, 1, 2} - {s0} for s0 in range(3))


@pytest.mark.unit
def test_a_levels_rounds_pool_into_one_point():
    from tritonize.planner.sweep import pooled

    a, b = Point("s", 4, 100, 10, 20, 30, requests=300, avg_batch=2.0), Point("s", 4, 80, 14, 40, 50, requests=100, failures=1, avg_batch=3.0)
    p = pooled([a, b])
    assert (p.rps, p.requests, p.failures, p.avg_batch) == (90, 400, 1, 2.5)
    assert p.p95_ms == pytest.approx((20 * 300 + 40 * 100) / 400)  # weighted by requests
    assert pooled([a]) is a


@pytest.mark.unit
def test_recommendation_picks_the_best_candidate_and_sizes_replicas():
    pts = curve("small", [(1, 100, 10), (2, 150, 30), (4, 160, 90)]) + curve("big", [(1, 90, 12), (2, 170, 25), (4, 250, 45)])
    pts += curve("baseline", [(1, 400, 5)])
    rec = recommend(pts, slo_ms=50, percentile=95, target_rps=1000, headroom=0.25, candidates=["small", "big"])
    assert rec.system == "big" and rec.max_rps == pytest.approx(250)
    assert rec.replicas == 5  # ceil(1000 * 1.25 / 250)
    assert rec.capacity["baseline"] == pytest.approx(400)  # measured and shown, never recommended
    assert recommend(pts, 1, 95, 10, 0, ["small"]).system is None


def test_plan_runs_end_to_end_on_a_small_grid(small_plan, tmp_path):
    from tritonize.cli import app

    out, result = small_plan
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["points"]) == 4 and all(p["failures"] == 0 and p["rps"] > 0 for p in saved["points"])
    # interleaved: both configs at 1 user, then both at 4 users; two rounds (--rounds 2), pooled per level
    assert [p["users"] for p in saved["points"]] == [1, 1, 4, 4] and len({p["system"] for p in saved["points"][:2]}) == 2
    assert [(r["users"], r["round"]) for r in saved["runs"]] == [(1, 1), (1, 1), (4, 1), (4, 1), (4, 2), (4, 2), (1, 2), (1, 2)]
    assert all(p["requests"] == sum(r["requests"] for r in saved["runs"] if (r["system"], r["users"]) == (p["system"], p["users"]))
               for p in saved["points"])
    # --confirm: the chosen config measured again on a fresh server, open loop at the predicted rate (and
    # lower where that missed); the recommendation carries the outcome
    confirmation, rec = saved["confirmation"], saved["recommendation"]
    assert confirmation["system"] == rec["system"] and confirmation["met"] == rec["confirmed"]["met"]
    assert confirmation["points"][0]["offered_rps"] == pytest.approx(confirmation["predicted_rps"], abs=0.1)
    assert len(confirmation["runs"]) == len(confirmation["points"]) and confirmation["confirmed_rps"] > 0
    assert rec["max_rps"] == pytest.approx(confirmation["confirmed_rps"])
    assert "confirmation: predicted" in " ".join(result.output.split())
    assert f"replica(s) of 'triton {CLASSIFIER} (batch<=" in result.output
    assert saved["recommendation"]["system"] in saved["candidates"] and saved["recommendation"]["replicas"] >= 1
    for png in ("latency_vs_throughput.png", "batch_sizes.png", "capacity.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "<img" in (out / "report.html").read_text()
    # the plan re-derives from the saved results without running load, for another SLO (one no round
    # trip can meet: at 1 ms, a quiet machine once served the tiny classifier's p95 under it)
    again = CliRunner().invoke(app, ["plan", "--from", str(out / "results.json"), "--slo-ms", "0.001", "--out", str(tmp_path / "re")])
    assert again.exit_code == 0 and "no configuration meets p95 <= 0.001 ms" in again.output
    assert json.loads((tmp_path / "re" / "results.json").read_text())["recommendation"]["system"] is None


def test_plan_control_serves_a_second_identical_baseline(built, tmp_path):
    """`plan --baselines --control`: the batching-off config served twice, measured like every system,
    recorded as a copy (never a candidate), and plan_targets prints its ratio beside on / off."""
    import subprocess
    import sys

    from tritonize.cli import app

    out = tmp_path / "plan"
    result = CliRunner().invoke(app, [
        "plan", "--scenario", str(scenario(tmp_path)), "--repository", str(built["repository"]),
        "--max-batch-size", "16", "--threads", "1", "--users", "2", "--seconds", "2", "--slo-ms", "500", "--no-pin",
        "--baselines", "--control", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    off = f"triton {EMBEDDER} (batching off)"
    copy = f"triton {EMBEDDER} (batching off, A/A copy)"
    assert saved["variants"][copy] == {**saved["variants"][off], "copy_of": off}
    assert copy not in saved["candidates"] and off not in saved["candidates"]
    assert {p["system"] for p in saved["points"]} >= {off, copy, "FastAPI + PyTorch"}
    assert all(p["failures"] == 0 and p["rps"] > 0 for p in saved["points"]), saved["points"]
    printed = subprocess.run([sys.executable, "-m", "benchmarks.investigations.plan_targets", str(out / "results.json"), "--slo-ms", "500"],
                             capture_output=True, text=True, check=True).stdout
    assert "A/A copy / off" in printed and "A/A difference at any level" in printed
    refused = CliRunner().invoke(app, ["plan", "--control", "--out", str(tmp_path / "refused")])
    assert refused.exit_code != 0 and "add --baselines" in refused.output
    # no FastAPI + PyTorch baseline exists for generation: refused before anything starts
    generate = Scenario(name="gen", pipeline="generate", model="gpt2", words=WordCounts(), pool_size=10).save(tmp_path / "gen.json")
    refused = CliRunner().invoke(app, ["plan", "--scenario", str(generate), "--baselines", "--out", str(tmp_path / "refused-gen")])
    assert refused.exit_code != 0 and "not 'generate'" in refused.output


def test_batcher_cost_measures_on_off_and_a_copy_in_rotating_windows(built, tmp_path):
    """batcher_cost: three servers of one pipeline (batching on, off, off again), one user in rotating
    windows; at one user no batch forms on any of them, and Triton's queue and compute are recorded."""
    import subprocess
    import sys

    from tritonize.contract.model_config import engine_model

    out = tmp_path / "cost.json"
    printed = subprocess.run([sys.executable, "-m", "benchmarks.investigations.batcher_cost", "-r", str(built["repository"]),
                              "--scenario", str(scenario(tmp_path)), "--pairs", "2", "--seconds", "0.5", "--out", str(out)],
                             capture_output=True, text=True, check=True).stdout
    saved = json.loads(out.read_text())
    names = saved["systems"]
    assert names["copy"] == names["off"].replace("(batching off)", "(batching off, A/A copy)")
    for name in names.values():
        windows = saved["windows"][name]
        assert len(windows) == 2 and all(w["req/s"] > 0 and w["queue us"] >= 0 and w["compute us"] > 0 for w in windows)
        assert all(w["avg batch"] == 1.0 for w in windows), windows  # one user: every execution runs one request
    engine = engine_model(built["repository"], EMBEDDER)  # the step whose batching the two configs differ in
    assert "dynamic_batching" in (out.with_suffix("") / "on" / engine / "config.pbtxt").read_text()
    assert "dynamic_batching" not in (out.with_suffix("") / "off" / engine / "config.pbtxt").read_text()
    assert "the batcher's hand-off" in " ".join(printed.split())


def test_huge_pages_bench_serves_both_arms_and_only_one_asks_for_huge_pages(built, tmp_path):
    """huge_pages_bench: two servers per arm and fresh in-process sessions per arm; under the kernel's
    `madvise` THP mode only the servers started with the tunable hold huge pages."""
    import subprocess
    import sys

    out = tmp_path / "huge.json"
    printed = subprocess.run([sys.executable, "-m", "benchmarks.investigations.huge_pages_bench", "-r", str(built["repository"]),
                              "--scenario", str(scenario(tmp_path)), "--rounds", "2", "--seconds", "0.3", "--pairs", "1",
                              "--out", str(out)], capture_output=True, text=True, check=True).stdout
    saved = json.loads(out.read_text())
    served = saved["served"]
    assert served["arms"] == ["default", "huge pages"] * 2
    assert all(len(c) == 2 and min(c) > 0 for c in served["compute_us"]) and len(served["huge_over_default_per_round"]) == 2
    assert all(len(v) == 1 and v[0] > 0 for v in saved["in_process"]["huge_over_default_per_pair"].values())
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[madvise]" in thp.read_text():
        assert served["stub_huge_kb"][0] == served["stub_huge_kb"][2] == 0
        assert served["stub_huge_kb"][1] > 0 and served["stub_huge_kb"][3] > 0
    assert "huge pages / default" in " ".join(printed.split())


def test_the_fastapi_baseline_classifies_like_pytorch(built):
    """A classify scenario's baseline serves /classify: the checkpoint's head in PyTorch (the reference,
    probabilities within 1e-5), its labels by name; /embed is not served by a classifier baseline."""
    import json as _json
    import urllib.error
    import urllib.request

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tritonize.planner.systems import FastApiBaseline

    texts = ["a short one", "and a somewhat longer text to classify here", "third"]
    checkpoint = str(built["tiny_bert_classifier"])
    baseline = FastApiBaseline(checkpoint, task="classify")
    url = baseline.start()
    try:
        def post(route: str):
            body = _json.dumps({"texts": texts}).encode()
            return urllib.request.urlopen(urllib.request.Request(f"{url}/{route}", data=body, headers={"Content-Type": "application/json"}), timeout=30)

        got = _json.loads(post("classify").read())
        with pytest.raises(urllib.error.HTTPError) as missing:
            post("embed")
        assert missing.value.code == 404
    finally:
        baseline.stop()
    tokenizer, model = AutoTokenizer.from_pretrained(checkpoint), AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        want = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    np.testing.assert_allclose(np.array(got["probabilities"]), want.numpy(), atol=1e-5)
    assert got["labels"] == [model.config.id2label[i] for i in want.argmax(-1).tolist()]


def test_streaming_generation_records_ttft_and_tokens_per_second(server, tmp_path):
    from tests.tiny_generators import GPT2

    path = scenario(tmp_path, pipeline="generate", model=GPT2, params={"max_new_tokens": 8, "temperature": 0})
    r = run_locust(path, server.grpc_url, "grpc", users=2, seconds=3, out_prefix=tmp_path / "gen", system="triton")
    with open(tmp_path / "gen_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert r.failures == 0 and int(rows["generate"]["Request Count"]) > 2
    assert 1 <= float(rows["generate"]["Average Content Size"]) <= 8  # tokens per call (EOS may end one early)
    ttft, total = float(rows["generate: time to first token"]["Average Response Time"]), float(rows["generate"]["Average Response Time"])
    assert 0 < ttft < total
    assert int(rows["generate: tokens/s"]["Request Count"]) == int(rows["generate"]["Request Count"])
    assert int(rows["generate: ms per token"]["Request Count"]) > 0


def test_demo_ends_with_a_load_test_of_the_embedder(server, capsys):
    """`make demo`'s last step (the README's main job: convert, serve, call, load-test) runs Locust
    against the served embedder and reports throughput, latency and the engine's batches."""
    import re

    from tritonize.commands import demo, load
    from tests.conftest import EMBEDDER_FUSED

    assert demo.steps()[-1] is load.DEMO and load.DEMO.convert is None
    load._demo_load(server, model=EMBEDDER_FUSED)
    out = " ".join(capsys.readouterr().out.split())
    m = re.search(r"to minilm-fused over gRPC: (\d+) req/s, p50 \d+ ms, p95 \d+ ms, (\d+) failures, ([\d.]+) texts per engine run", out)
    assert m, out
    assert int(m.group(1)) > 0 and m.group(2) == "0" and float(m.group(3)) >= 1.0


@pytest.mark.unit
def test_engine_bench_compares_concurrency_one_with_in_process_over_the_same_texts():
    """The 1 ms target's gap: p50s over the first n calls of each row, which are the same n texts."""
    import numpy as np

    from benchmarks.engine_bench import median_of, paired_p50_gap, summarize

    inprocess = summarize("ORT in-process", "mix", "batch=1", 6, 1.0, [0.001, 0.009, 0.002, 0.008, 0.030, 0.030])
    served = summarize("served fused", "mix", "conc=1 blocking", 4, 1.0, [0.002, 0.010, 0.003, 0.009])
    # over the first 4 texts: p50 6.0 ms served vs 5.0 ms in process; whole windows would compare 6.0 with 8.5
    assert paired_p50_gap(served, inprocess) == pytest.approx(1.0)
    assert served.p50_ms - inprocess.p50_ms == pytest.approx(-2.5)
    served.p50_gap_ms, again = 1.5, summarize("served fused", "mix", "conc=1 blocking", 4, 1.0, [0.004] * 4)
    again.p50_gap_ms = 3.5
    third = summarize("served fused", "mix", "conc=1 blocking", 4, 1.0, [0.005] * 4)
    third.p50_gap_ms = 0.5
    row = median_of([served, again, third])  # rounds: each figure's median
    assert row.p50_gap_ms == pytest.approx(1.5) and row.p50_ms == pytest.approx(5.0) and np.isfinite(row.texts_per_s)


@pytest.mark.unit
def test_engine_bench_pairs_alternate_windows_and_read_each_pair():
    """The two targets come from (in-process, served) windows back to back, the order flipping each pair;
    each pair gives one ratio and one same-texts gap, and the target is their median."""
    from benchmarks.engine_bench import paired_windows, summarize

    calls, speed = [], iter([1.0, 1.0, 0.5, 0.5])  # the machine runs at half speed for the second pair

    def inprocess(batch):
        calls.append(f"in-process batch={batch}")
        rate = 100 * next(speed) if batch == 4 else 50
        return summarize("ORT in-process", "len16", f"batch={batch}", rate, 1.0, [0.004] * 3)

    def served(conc, blocking):
        calls.append(f"served conc={conc}{' blocking' if blocking else ''}")
        rate = 90 * next(speed) if conc == 32 else 40
        return summarize("served fused", "len16", f"conc={conc}", rate, 1.0, [0.0055, 0.0050, 0.0045] if blocking else [0.01])

    pair = paired_windows(2, 1.0, inprocess, served, 4, "len16", "fused", None, None)
    assert calls == ["in-process batch=4", "in-process batch=1", "served conc=32", "served conc=1 blocking",
                     "served conc=32", "served conc=1 blocking", "in-process batch=4", "in-process batch=1"]
    assert pair.conc32_ratios == pytest.approx([0.9, 0.9])  # each pair saw one machine speed
    assert pair.gaps_ms == pytest.approx([1.0, 1.0]) and pair.gap_ms == pytest.approx(1.0)
    assert pair.conc32 == pytest.approx(0.9) and pair.batch == 4


@pytest.mark.unit
def test_engine_bench_pins_every_thread_of_its_process():
    """`--pin` moves ONNX Runtime's and torch's pool threads too, not only the calling thread."""
    import subprocess
    import sys

    code = """
import os, threading
from benchmarks.engine_bench import pin_process
ready, done, ids = threading.Event(), threading.Event(), []
def worker():
    ids.append(threading.get_native_id()); ready.set(); done.wait()
t = threading.Thread(target=worker); t.start(); ready.wait()
pin_process({0})
print(sorted(os.sched_getaffinity(ids[0])), sorted(os.sched_getaffinity(0)))
done.set(); t.join()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("] [")
    assert out[0] == "[0" and out[1].strip() == "0]"


@pytest.mark.unit
def test_plan_targets_compare_batching_on_and_off_per_level_and_round():
    from tritonize.planner.capacity import PlanResults
    from benchmarks.investigations.plan_targets import on_off_rows, tail_ratios

    on, off = "triton m (batch<=64)", "triton m (batching off)"
    runs = [{"system": s, "users": u, "round": k, "rps": rps}
            for s, u, k, rps in [(on, 1, 0, 90), (on, 1, 1, 110), (off, 1, 0, 100), (off, 1, 1, 100),
                                 (on, 8, 0, 150), (on, 8, 1, 130), (off, 8, 0, 100), (off, 8, 1, 100)]]
    points = [Point(on, 1, 100, 10, 20, 25), Point(off, 1, 100, 10, 20, 22), Point(on, 8, 140, 50, 90, 120),
              Point(off, 8, 105, 80, 200, 400), Point(off, 16, 90, 170, 400, 900)]
    results = PlanResults({}, {}, points, runs, variants={on: {"model": "m", "dynamic_batching": True},
                                                          off: {"model": "m", "dynamic_batching": False}})
    assert on_off_rows(results) == [(on, 1, 1.0, [0.9, 1.1]), (on, 8, 140 / 105, [1.5, 1.3])]
    # up to each system's peak req/s: off peaks at 8 users (its 16-user level is saturated and not counted)
    assert tail_ratios(points) == {on: 2.5, off: 5.0}


@pytest.mark.unit
def test_plan_targets_read_on_off_against_the_aa_control():
    """With `--control`, a second batching-off server: an on / off ratio below 1 counts as 'within A/A'
    only where the two identical servers differed at least as much at that level."""
    from tritonize.planner.capacity import PlanResults
    from benchmarks.investigations.plan_targets import control_ratios, on_off_rows, on_off_verdict

    on, off, copy = "triton m (batch<=64)", "triton m (batching off)", "triton m (batching off, A/A copy)"
    points = [Point(on, 1, 95, 10, 20, 25), Point(off, 1, 100, 10, 20, 22), Point(copy, 1, 92, 10, 20, 22),
              Point(on, 2, 90, 20, 30, 35), Point(off, 2, 100, 20, 30, 32), Point(copy, 2, 97, 20, 30, 32)]
    variants = {on: {"model": "m", "dynamic_batching": True}, off: {"model": "m", "dynamic_batching": False},
                copy: {"model": "m", "dynamic_batching": False, "copy_of": off}}
    results = PlanResults({}, {}, points, [], variants=variants)
    assert [r[0] for r in on_off_rows(results)] == [on, on]  # the copy is neither the baseline nor a batching-on system
    assert control_ratios(results) == pytest.approx({1: 0.92, 2: 0.97})
    assert on_off_verdict(0.95, 0.92) == "within A/A" and on_off_verdict(0.90, 0.97) == "NO"
    assert on_off_verdict(1.02, None) == "yes" and on_off_verdict(0.99, None) == "NO"
    assert control_ratios(PlanResults({}, {}, points[:2], [], variants={k: variants[k] for k in (on, off)})) == {}
