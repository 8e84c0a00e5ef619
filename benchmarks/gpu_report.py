"""The GPU check's report: the issue's target ratios (printed, never asserted) and a markdown table."""

from __future__ import annotations

import math

# (name, target text, passes(value)) per ratio; issue 9, item 5.
TARGETS = {
    "encoder served best / in-process engine best (throughput)": (">= 0.80", lambda v: v >= 0.8),
    "encoder dynamic batching on / off at concurrency 64": (">= 5", lambda v: v >= 5),
    "encoder end-to-end p50 at concurrency 1 (ms)": ("<= 2 ms", lambda v: v <= 2.0),
    "GPT-2 served at 64 streams / HF generate one at a time (tokens/s)": (">= 10", lambda v: v >= 10),
    "GPT-2 TTFT p50 at 64 streams / at 1 stream": ("<= 1.5", lambda v: v <= 1.5),
    "VITS real-time factor at concurrency 16": ("<= 0.02", lambda v: v <= 0.02),
}


def _pick(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def ratios(results: dict, plan) -> list[dict]:
    """Each target the run has the numbers for; the dry run's (CPU, tiny) stand-ins keep the same names."""
    out: dict[str, float] = {}
    served, inproc = results.get("served", {}), results.get("in_process", {})
    enc = served.get("encoder", [])
    if enc and inproc.get("throughput"):
        best_served = max(r["requests_per_s"] for r in enc if r["batching"] == "on")
        out["encoder served best / in-process engine best (throughput)"] = best_served / max(r["rows_per_s"] for r in inproc["throughput"])
    at = 64 if 64 in plan.concurrency else max(plan.concurrency)
    on, off = _pick(enc, batching="on", concurrency=at), _pick(enc, batching="off", concurrency=at)
    if on and off and off["requests_per_s"]:
        out["encoder dynamic batching on / off at concurrency 64"] = on["requests_per_s"] / off["requests_per_s"]
    one = _pick(enc, batching="on", concurrency=1)
    if one:
        out["encoder end-to-end p50 at concurrency 1 (ms)"] = one["p50_ms"]
    gpt2, hf = served.get("gpt2", []), results.get("hf_generate", [])
    top = max(plan.streams)
    many, single, base = _pick(gpt2, setting=f"{top} streams"), _pick(gpt2, setting="1 streams"), _pick(hf, setting="one at a time")
    if many and base:
        out["GPT-2 served at 64 streams / HF generate one at a time (tokens/s)"] = many["tokens_per_s"] / base["tokens_per_s"]
    if many and single:
        out["GPT-2 TTFT p50 at 64 streams / at 1 stream"] = many["ttft_p50_ms"] / single["ttft_p50_ms"]
    vits = served.get("vits", [])
    if vits:
        out["VITS real-time factor at concurrency 16"] = max(vits, key=lambda r: r["concurrency"])["rtf"]
    return [{"measure": k, "value": v, "target": TARGETS[k][0], "met": bool(TARGETS[k][1](v)) if math.isfinite(v) else False}
            for k, v in out.items()]


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    if not rows:
        return ["(none)"]

    def cell(v) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]


def markdown(report: dict) -> str:
    r, plan = report["results"], report["plan"]
    env = r.get("environment", {})
    kind = "DRY RUN (CPU, tiny shapes): checks the script, measures nothing about GPUs" if report["dry_run"] else "GPU run"
    lines = [f"# tritonize GPU check: {kind}", "",
             f"{env.get('gpu', 'no GPU')}, torch {env.get('torch')}, transformers {env.get('transformers')}, Python {env.get('python')}; "
             f"PyTorch engine on {plan['device']} in {plan['dtype']}; {report['seconds']} s in all.", "",
             "## Target ratios (issue 9, item 5; printed, not asserted)", ""]
    lines += _table([{**x, "value": round(x["value"], 3), "met": "yes" if x["met"] else "NO"} for x in report["ratios"]], ["measure", "value", "target", "met"])
    lines += ["", "## Parity of the PyTorch engines vs float32 PyTorch on CPU (tiny models)", ""]
    lines += _table(r.get("parity", []), ["check", "dtype", "value", "tolerance", "ok"])
    inproc = r.get("in_process", {})
    lines += ["", f"## Encoder, sequence {plan['seq_len']}: engine in process", ""] + _table(inproc.get("throughput", []), ["batch", "rows_per_s", "p50_ms"])
    lines += ["", f"memory: {inproc.get('memory', {})}"]
    served = r.get("served", {})
    lines += ["", "## Encoder served (gRPC, one text per request)", ""]
    lines += _table(served.get("encoder", []), ["batching", "concurrency", "requests_per_s", "p50_ms", "p99_ms", "model_step_avg_batch", "errors"])
    lines += ["", f"memory while serving: {served.get('memory_while_serving', {})}"]
    lines += ["", "## GPT-2: tokens/s and time to first token", ""]
    lines += _table(r.get("hf_generate", []) + served.get("gpt2", []), ["system", "setting", "tokens_per_s", "ttft_p50_ms", "requests"])
    lines += ["", "## VITS: real-time factor (wall seconds per second of audio)", ""]
    lines += _table(served.get("vits", []), ["concurrency", "requests", "audio_s", "wall_s", "rtf", "errors"])
    if report["errors"]:
        lines += ["", "## Sections that failed or were skipped", ""] + [f"- {k}: {v.splitlines()[0]}" for k, v in report["errors"].items()]
    return "\n".join(lines) + "\n"
