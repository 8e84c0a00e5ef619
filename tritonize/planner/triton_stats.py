"""Triton's own view of a load window: statistics API deltas per model (queue, compute, batch sizes)."""

from __future__ import annotations

import json
import re
import time
import urllib.request

from tritonize.runtime.triton import METRICS_SETTLE_S


def snapshot(http_url: str) -> dict[str, dict]:
    """Model name -> Triton's cumulative statistics (GET /v2/models/stats)."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/stats", timeout=10) as r:
        stats = json.loads(r.read())
    return {m["name"]: m for m in stats.get("model_stats", [])}


def metrics(metrics_url: str) -> dict[str, float]:
    """The tritonize_* metrics from Prometheus /metrics, keyed 'name{model}', once the updates of the
    requests that already finished have landed (the model steps send them in the background)."""
    time.sleep(METRICS_SETTLE_S)
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    return {f"{n}{{{m}}}": float(v) for n, m, v in re.findall(r'^(tritonize_\w+)\{model="([^"]+)"\} (\S+)$', text, re.M)}


def _ns(stats: dict, key: str) -> tuple[int, int]:
    s = stats.get("inference_stats", {}).get(key, {})
    return int(s.get("count", 0)), int(s.get("ns", 0))


def window(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per model, what happened between two snapshots: averages in ms, batch size, failures, histogram."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        d = lambda k: int(a.get(k, 0)) - int(b.get(k, 0))  # noqa: E731
        inferences, executions = d("inference_count"), d("execution_count")
        if inferences == 0 and executions == 0:
            continue
        row = {"inferences": inferences, "executions": executions, "avg_batch": inferences / max(executions, 1)}
        for key in ("queue", "compute_infer", "success", "fail"):
            (c1, n1), (c0, n0) = _ns(a, key), _ns(b, key)
            row[f"{key}_count"] = c1 - c0
            row[f"{key}_ms"] = (n1 - n0) / max(c1 - c0, 1) / 1e6
        hist_before = {s["batch_size"]: int(s["compute_infer"]["count"]) for s in b.get("batch_stats", [])}
        row["batch_histogram"] = {
            int(s["batch_size"]): int(s["compute_infer"]["count"]) - hist_before.get(s["batch_size"], 0)
            for s in a.get("batch_stats", [])
            if int(s["compute_infer"]["count"]) - hist_before.get(s["batch_size"], 0) > 0
        }
        out[name] = row
    return out


COLUMNS = ("inferences", "executions", "avg_batch", "queue_ms", "compute_infer_ms", "success_count", "fail_count")


def write(window: dict[str, dict], prefix) -> tuple[str, str]:
    """A window's statistics beside Locust's CSV: PREFIX_triton.json (everything) and PREFIX_triton.csv
    (one row per model: requests, executions, average batch, queue and compute ms, successes, failures)."""
    js, csv = f"{prefix}_triton.json", f"{prefix}_triton.csv"
    with open(js, "w") as f:
        json.dump(window, f, indent=2)
    with open(csv, "w") as f:
        f.write(",".join(("model",) + COLUMNS) + "\n")
        for name, row in window.items():
            f.write(",".join([name] + [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]) + "\n")
    return js, csv


def wait_idle(http_url: str, timeout_s: float = 60.0, interval_s: float = 0.5) -> float:
    """Wait until the server has finished what it was sent (its request counts stop moving): requests of
    a Locust run that ended are still queued when their client left (Triton 2.51 does not cancel them),
    and would load the next level. Returns the seconds waited."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout_s:
        now = sum(int(m.get("inference_count", 0)) + int(m.get("inference_stats", {}).get("fail", {}).get("count", 0))
                  for m in snapshot(http_url).values())
        if now == last:
            break
        last = now
        time.sleep(interval_s)
    return time.monotonic() - start
