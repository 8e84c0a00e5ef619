"""Reports a person can read from the plots: latency vs throughput per configuration with the SLO
line, the batch sizes Triton formed, and capacity under the SLO with the recommendation."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tritonize.planner.capacity import PlanResults, Point, Recommendation  # noqa: E402

LEVEL_COLUMNS = ("system", "level", "offered req/s", "achieved req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "late sends",
                 "avg batch", "queue ms", "compute ms", "padding")


def level_cells(p: Point) -> list[str]:
    """One load level as table cells: offered vs achieved rate, latency, failures, and the server's view
    (Triton's average batch, queue and compute per request at the engine step; tokens computed / real)."""
    f = lambda v, fmt: format(v, fmt) if v is not None else ""  # noqa: E731
    return [p.system, f"{p.offered_rps:g} req/s" if p.offered_rps else f"{p.users} users", f(p.offered_rps, ".1f"),
            f"{p.rps:.1f}", f"{p.p50_ms:.0f}", f"{p.p95_ms:.0f}", f"{p.p99_ms:.0f}", str(p.failures),
            str(p.late) if p.offered_rps else "", f(p.avg_batch, ".1f"), f(p.queue_ms, ".2f"), f(p.compute_ms, ".2f"),
            f(p.padding, ".2f")]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # nothing cut off: labels and legends outside the axes included
    plt.close(fig)
    return path


def plot_latency_curves(results: PlanResults, slo_ms: float | None, percentile: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for system in dict.fromkeys(p.system for p in results.points):
        pts = sorted((p for p in results.points if p.system == system), key=lambda p: (p.offered_rps or 0, p.users))
        ax.plot([p.rps for p in pts], [p.latency(percentile) for p in pts], marker="o", label=system)
        for p in pts:
            label = f"{p.offered_rps:g}/s" if p.offered_rps else f"{p.users}u"
            ax.annotate(label, (p.rps, p.latency(percentile)), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if slo_ms:
        ax.axhline(slo_ms, color="red", linestyle="--", label=f"SLO p{percentile} = {slo_ms:g} ms")
    ax.set_xlabel("achieved throughput (successful requests/s)")
    ax.set_ylabel(f"p{percentile} latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"p{percentile} latency vs throughput ({results.scenario.get('name', '')})\n"
                 "labels: concurrent users (u) or offered rate (/s)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def plot_batch_histograms(results: PlanResults, path: Path) -> Path | None:
    """For each served system, at its highest load: how many rows each model-step execution carried."""
    rows = []
    for run in results.runs:
        engine = run.get("engine")  # the model running the engine: NAME_model, or a fused pipeline itself
        steps = {k: v for k, v in run.get("triton", {}).items() if k == engine or (not engine and k.endswith("_model"))}
        if steps:
            rows.append((run["system"], run["users"], next(iter(steps.values()))["batch_histogram"]))
    top = {}
    for system, users, hist in rows:
        if system not in top or users > top[system][0]:
            top[system] = (users, hist)
    if not top:
        return None
    fig, axes = plt.subplots(len(top), 1, figsize=(8, 2.2 * len(top)), squeeze=False)
    for ax, (system, (users, hist)) in zip(axes[:, 0], top.items()):
        sizes = sorted(int(k) for k in hist)
        ax.bar(sizes, [hist[str(s)] if str(s) in hist else hist[s] for s in sizes], color="tab:blue")
        total = sum(hist.values())
        mean = sum(int(k) * v for k, v in hist.items()) / max(total, 1)
        ax.set_title(f"{system} at {users} users: {total} executions, mean batch {mean:.1f} requests", fontsize=9)
        ax.set_ylabel("executions")
        ax.set_xticks(sizes)
    axes[-1, 0].set_xlabel("requests per model-step execution (Triton batch statistics)")
    fig.tight_layout()
    return _save(fig, path)


def plot_capacity(rec: Recommendation, path: Path) -> Path:
    systems = sorted(rec.capacity, key=rec.capacity.get)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(systems) + 1.5))
    colors = ["tab:green" if s == rec.system else "tab:gray" for s in systems]
    ax.barh(systems, [rec.capacity[s] for s in systems], color=colors)
    for i, s in enumerate(systems):
        ax.text(rec.capacity[s], i, f" {rec.capacity[s]:.0f}", va="center", fontsize=8)
    ax.set_xlabel(f"max requests/s with p{rec.percentile} <= {rec.slo_ms:g} ms (green: recommended)")
    ax.set_title("capacity under the SLO, one replica")
    return _save(fig, path)


def plot_confirmation(rec: Recommendation, slo_ms: float, percentile: int, path: Path) -> Path | None:
    """The confirmation run's levels (offered rate -> p-latency, achieved) against the predicted capacity."""
    confirmed = rec.confirmed or {}
    levels = confirmed.get("levels") or []
    if not levels:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [lv["offered_rps"] for lv in levels]
    ax.plot(xs, [lv[f"p{percentile}_ms"] for lv in levels], marker="o", color="tab:blue", label=f"confirmation: p{percentile}")
    for lv in levels:
        ax.annotate(f"achieved {lv['rps']:.0f}/s", (lv["offered_rps"], lv[f"p{percentile}_ms"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.axhline(slo_ms, color="red", linestyle="--", label=f"SLO p{percentile} = {slo_ms:g} ms")
    ax.axvline(confirmed.get("predicted_rps", 0), color="tab:gray", linestyle=":", label=f"predicted {confirmed.get('predicted_rps', 0):.1f} req/s")
    if confirmed.get("confirmed_rps"):
        ax.axvline(confirmed["confirmed_rps"], color="tab:green", label=f"confirmed {confirmed['confirmed_rps']:.1f} req/s")
    ax.set_xlabel("offered rate (req/s), fresh server")
    ax.set_ylabel(f"p{percentile} latency (ms)")
    ax.set_title(f"confirmation of '{rec.system}': {'held' if confirmed.get('met') else 'MISSED'}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def write_report(results: PlanResults, out_dir: Path, rec: Recommendation | None, slo_ms: float | None, percentile: int) -> Path:
    """report.md and report.html beside their PNG plots; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [plot_latency_curves(results, slo_ms, percentile, out_dir / "latency_vs_throughput.png")]
    hist = plot_batch_histograms(results, out_dir / "batch_sizes.png")
    if hist:
        plots.append(hist)
    if rec:
        plots.append(plot_capacity(rec, out_dir / "capacity.png"))
        confirmation = plot_confirmation(rec, slo_ms or rec.slo_ms, percentile, out_dir / "confirmation.png")
        if confirmation:
            plots.append(confirmation)
    setup = results.setup
    lines = [f"# Load report: {results.scenario.get('name', '')}", ""]
    if rec:
        lines += [f"**Recommendation:** {rec.note or 'none'}", ""]
        if rec.replica:
            lines += [f"- one replica: {replica_text(rec.replica)}"]
        if rec.repository:
            lines += [f"- its repository: {rec.repository}"]
        lines += [""]
    lines += [f"- {k}: {v}" for k, v in setup.items()] + [""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["| " + " | ".join(LEVEL_COLUMNS) + " |", "|---" + "|---:" * (len(LEVEL_COLUMNS) - 1) + "|"]
    lines += ["| " + " | ".join(level_cells(p)) + " |" for p in results.points]
    pages = [(run, Path(run["html"])) for run in results.runs if run.get("html")]
    if pages:
        lines += ["", "Locust's page for each level:"]
        for run, page in pages:
            level = f"{run['offered_rps']:g} req/s" if run.get("offered_rps") else f"{run['users']} users"
            rel = page.relative_to(out_dir) if page.is_relative_to(out_dir) else page
            lines.append(f"- [{run['system']}, {level}, round {run.get('round', 1)}]({rel})")
    if rec:
        lines += ["", f"| system | max req/s at p{rec.percentile} <= {rec.slo_ms:g} ms |", "|---|---:|"]
        lines += [f"| {s} | {c:.1f} |" for s, c in sorted(rec.capacity.items(), key=lambda kv: -kv[1])]
    lines += ["", "Raw results: `results.json` / `results.csv`; Locust CSV and HTML reports per run in `locust/`."]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n")
    body = _html(lines)
    page = out_dir / "report.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><title>tritonize load report</title>"
                    f"<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse}}"
                    f"td,th{{border:1px solid #ccc;padding:2px 6px}}img{{max-width:100%}}</style>{body}")
    return page


def replica_text(replica: dict) -> str:
    pinned = f"pinned to cores {replica['cpus']}" if replica.get("cpus") else "not pinned"
    memory = f"{replica['memory_mib']:.0f} MiB peak server memory" if replica.get("memory_mib") else "memory not measured"
    return (f"{replica['cores']} core(s) {pinned}, {replica['ort_threads']} ONNX Runtime thread(s) x {replica['instances']} "
            f"instance(s), {replica['device']}, {memory}")


def _html(lines: list[str]) -> str:
    """The report's Markdown subset (headings, bullets, images, tables) as HTML."""
    out, table = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                table.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>")
            continue
        if table:
            out.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            out.append(f'<p><img src="{html.escape(line[line.index("(") + 1 : -1])}"></p>')
        elif line.startswith("- [") and "](" in line:  # a link
            text, href = line[3:].rsplit("](", 1)
            out.append(f'<li><a href="{html.escape(href[:-1])}">{html.escape(text)}</a></li>')
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    return "".join(out)
