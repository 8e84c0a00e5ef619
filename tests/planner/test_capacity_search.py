"""Open-loop capacity: the search between measured rates, what counts as keeping up, and a confirmation
that misses carried into the recommendation."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonize.planner.capacity import ACHIEVED, Point, Recommendation, next_rate, rate_capacity, recommend, with_confirmation
from tests.conftest import CLASSIFIER


def level(rate: float, p95: float, done: float = 1.0, failures: int = 0) -> Point:
    scheduled = int(rate * 10)
    return Point("a", 1, rate * done, p95 / 2, p95, p95 * 1.5, requests=int(scheduled * done), failures=failures,
                 offered_rps=rate, scheduled=scheduled)


@pytest.mark.unit
def test_capacity_is_the_highest_offered_rate_that_keeps_up_below_the_first_miss():
    pts = [level(50, 10), level(100, 20), level(200, 80), level(400, 30)]  # 400 passing above a miss is noise
    assert rate_capacity(pts, 50, 95) == (100, True)
    assert rate_capacity([level(50, 10), level(100, 20, done=0.97)], 50, 95) == (50, True)  # achieved < 0.98 x offered
    assert rate_capacity([level(50, 10), level(100, 20, failures=1)], 50, 95) == (50, True)
    assert rate_capacity([level(50, 10), level(100, 20)], 50, 95) == (100, False)  # the SLO never reached: a lower bound
    assert rate_capacity([level(50, 90)], 50, 95) == (0, True)
    assert level(100, 20, done=ACHIEVED).meets(50, 95) and not level(100, 20, done=ACHIEVED - 0.01).meets(50, 95)


@pytest.mark.unit
def test_the_search_bisects_between_pass_and_miss_and_grows_past_an_unreached_slo():
    assert next_rate([level(100, 20), level(200, 80)], 50, 95) == 150
    assert next_rate([level(100, 20), level(150, 30), level(200, 80)], 50, 95) == 175
    assert next_rate([level(100, 20), level(196, 30), level(200, 80)], 50, 95) is None  # within 5% of the miss
    assert next_rate([level(100, 20), level(200, 30)], 50, 95) == 300  # SLO not reached: search above
    assert next_rate([level(100, 80)], 50, 95) == 50  # nothing passed: below


@pytest.mark.unit
def test_an_unreached_slo_is_reported_as_a_lower_bound():
    rec = recommend([level(100, 20), level(200, 30)], 50, 95, target_rps=1000, headroom=0.25)
    assert rec.max_rps == 200 and rec.replicas == 7 and rec.slo_reached == {"a": False}
    assert "at least 200.0 req/s per replica: the SLO was not reached" in rec.note


def recommendation() -> Recommendation:
    return Recommendation(50, 95, 1000, 0.25, {"a": 344}, "a", 344, 4, "4 replica(s) of 'a' ...")


@pytest.mark.unit
def test_a_confirmation_that_misses_carries_the_confirmed_rate():
    """The issue's case: 344 req/s predicted, p95 109 ms at that rate, 245 req/s held -> 6 replicas."""
    confirmed = {"system": "a", "predicted_rps": 344, "rate_rps": 344, "achieved_rps": 330.0, "p95_ms": 109.0, "failures": 0,
                 "met": False, "confirmed_rps": 245.0, "levels": [], "runs": [{"big": 1}]}
    rec = with_confirmation(recommendation(), confirmed)
    assert rec.max_rps == 245 and rec.replicas == 6  # ceil(1000 * 1.25 / 245)
    assert rec.note.startswith("CONFIRMATION MISSED: at the predicted 344.0 req/s") and "p95 109 ms" in rec.note
    assert rec.confirmed is not None and rec.confirmed["met"] is False and "runs" not in rec.confirmed
    none = with_confirmation(recommendation(), {**confirmed, "confirmed_rps": 0.0})
    assert none.system is None and none.replicas is None and "no recommendation" in none.note
    held = with_confirmation(recommendation(), {**confirmed, "met": True, "p95_ms": 40.0})
    assert held.max_rps == 344 and held.replicas == 4 and "confirmed on a fresh server at 344 req/s" in held.note


def test_plan_with_rates_searches_defines_a_replica_writes_its_repository_and_confirms(built, tmp_path):
    """`plan --rates`: open-loop levels plus search levels, the replica and repository recorded in
    results.json in the schema `deploy` reads, and a confirmation on a fresh server at max_rps whose
    outcome (held or missed) the recommendation carries."""
    from tritonize.cli import app
    from tritonize.planner.scenarios import Scenario, WordCounts

    sc = Scenario(name="t", pipeline="classify", model=CLASSIFIER, words=WordCounts(median=8, sigma=0.5, min=2, max=32),
                  pool_size=200).save(tmp_path / "sc.json")
    out = tmp_path / "plan"
    result = CliRunner().invoke(app, [
        "plan", "--scenario", str(sc), "--repository", str(built["repository"]), "--max-batch-size", "16", "--threads", "1",
        "--rates", "20,60", "--search-levels", "1", "--seconds", "2", "--slo-ms", "500", "--target-rps", "100", "--no-pin",
        "--confirm", "--confirm-seconds", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    rates = [p["offered_rps"] for p in saved["points"]]
    assert rates[:2] == [20, 60] and len(rates) == 3  # the grid, then one search level (above 60 or between)
    assert all(p["scheduled"] > 0 and p["requests"] <= p["scheduled"] for p in saved["points"])
    rec = saved["recommendation"]
    replica = rec["replica"]
    assert set(replica) == {"cores", "cpus", "ort_threads", "instances", "device", "memory_mib"}
    assert replica["ort_threads"] == 1 and replica["instances"] == 1 and replica["device"] == "cpu" and replica["cpus"] is None
    assert isinstance(replica["cores"], int) and replica["memory_mib"] > 50  # a server and its stubs
    repo = Path(rec["repository"])
    assert (repo / CLASSIFIER / "config.pbtxt").exists() and "max_batch_size: 16" in (repo / f"{CLASSIFIER}_model" / "config.pbtxt").read_text()
    confirmed = rec["confirmed"]
    assert saved["setup"]["confirmation seconds per level"] == 3  # --confirm-seconds, not --seconds
    assert saved["confirmation"]["runs"][0]["seconds"] == 3
    assert confirmed["rate_rps"] == pytest.approx(confirmed["predicted_rps"], abs=0.1) and confirmed["levels"]
    if confirmed["met"]:
        assert rec["max_rps"] == confirmed["predicted_rps"]
    else:  # missed on this machine: carried, loudly
        assert rec["max_rps"] == confirmed["confirmed_rps"] and "CONFIRMATION MISSED" in " ".join(result.output.split())
    assert "one replica:" in result.output and (out / "confirmation.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert 'href="locust/' in page and "queue ms" in page and "offered req/s" in page
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"offered_rps", "queue_ms", "compute_ms", "padding", "avg_batch"} <= set(header)


@pytest.mark.unit
def test_the_confirmation_plot_says_missed_or_held(tmp_path, monkeypatch):
    from tritonize.planner import report

    titles, real = [], report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (titles.append(fig.axes[0].get_title()), real(fig, path))[1])
    level = {"offered_rps": 344, "rps": 330.0, "p95_ms": 109.0}
    for met in (False, True):
        confirmed = {"predicted_rps": 344, "confirmed_rps": 245 if not met else 344, "met": met, "levels": [level]}
        rec = Recommendation(50, 95, 1000, 0.25, {"a": 344}, "a", 344, 4, "", confirmed=confirmed)
        assert report.plot_confirmation(rec, 50, 95, tmp_path / f"c{met}.png").read_bytes()[:4] == b"\x89PNG"
    assert titles == ["confirmation of 'a': MISSED", "confirmation of 'a': held"]


@pytest.mark.unit
@pytest.mark.parametrize("args, says", [
    (["--rates", "50,x"], "--rates '50,x': give comma-separated request rates > 0 (req/s), e.g. --rates 50,100,200"),
    (["--rates", "0"], "--rates '0': give comma-separated request rates > 0"),
    (["--rates", "50", "--arrival", "burst"], "--arrival 'burst': choose one of poisson, constant"),
    (["--rates", "50", "--baselines"], "the FastAPI + PyTorch baseline runs closed-loop: use --users with --baselines"),
])
def test_bad_open_loop_options_get_one_line(args, says, tmp_path):
    from tritonize.cli import app

    result = CliRunner().invoke(app, ["plan", "--out", str(tmp_path / "p"), *args])
    assert result.exit_code != 0 and says in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "p").exists()
