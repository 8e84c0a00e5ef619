"""Reports a person can read from the plots: latency vs throughput per configuration with the SLO
line, the batch sizes Triton formed, and capacity under the SLO with the recommendation."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tritonize.planner.capacity import PlanResults, Recommendation  # noqa: E402


def plot_latency_curves(results: PlanResults, slo_ms: float | None, percentile: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for system in dict.fromkeys(p.system for p in results.points):
        pts = sorted((p for p in results.points if p.system == system), key=lambda p: p.users)
        ax.plot([p.rps for p in pts], [p.latency(percentile) for p in pts], marker="o", label=system)
        for p in pts:
            ax.annotate(f"{p.users}u", (p.rps, p.latency(percentile)), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if slo_ms:
        ax.axhline(slo_ms, color="red", linestyle="--", label=f"SLO p{percentile} = {slo_ms:g} ms")
    ax.set_xlabel("throughput (successful requests/s)")
    ax.set_ylabel(f"p{percentile} latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"p{percentile} latency vs throughput ({results.scenario.get('name', '')}); labels = concurrent users")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_capacity(rec: Recommendation, path: Path) -> Path:
    systems = sorted(rec.capacity, key=rec.capacity.get)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(systems) + 1.5))
    colors = ["tab:green" if s == rec.system else "tab:gray" for s in systems]
    ax.barh(systems, [rec.capacity[s] for s in systems], color=colors)
    for i, s in enumerate(systems):
        ax.text(rec.capacity[s], i, f" {rec.capacity[s]:.0f}", va="center", fontsize=8)
    ax.set_xlabel(f"max requests/s with p{rec.percentile} <= {rec.slo_ms:g} ms (green: recommended)")
    ax.set_title("capacity under the SLO, one replica")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: PlanResults, out_dir: Path, rec: Recommendation | None, slo_ms: float | None, percentile: int) -> Path:
    """report.md and report.html beside their PNG plots; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [plot_latency_curves(results, slo_ms, percentile, out_dir / "latency_vs_throughput.png")]
    hist = plot_batch_histograms(results, out_dir / "batch_sizes.png")
    if hist:
        plots.append(hist)
    if rec:
        plots.append(plot_capacity(rec, out_dir / "capacity.png"))
    setup = results.setup
    lines = [f"# Load report: {results.scenario.get('name', '')}", ""]
    if rec:
        lines += [f"**Recommendation:** {rec.note or 'none'}", ""]
    lines += [f"- {k}: {v}" for k, v in setup.items()] + [""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] + [""]
    header = "| system | users | req/s | p50 ms | p95 ms | p99 ms | failures | avg batch |"
    lines += [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in results.points:
        batch = f"{p.avg_batch:.1f}" if p.avg_batch else ""
        lines.append(f"| {p.system} | {p.users} | {p.rps:.1f} | {p.p50_ms:.0f} | {p.p95_ms:.0f} | {p.p99_ms:.0f} | {p.failures} | {batch} |")
    if rec:
        lines += ["", f"| system | max req/s at p{rec.percentile} <= {rec.slo_ms:g} ms |", "|---|---:|"]
        lines += [f"| {s} | {c:.1f} |" for s, c in sorted(rec.capacity.items(), key=lambda kv: -kv[1])]
    lines += ["", "Raw results: `results.json` / `results.csv`; Locust CSV and HTML reports per run in `locust/`."]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n")
    body = _html(lines)
    page = out_dir / "report.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><title>tritonize load report</title>"
                    f"<style>body{{font-family:sans-serif;max-width:900px;margin:auto}}table{{border-collapse:collapse}}"
                    f"td,th{{border:1px solid #ccc;padding:2px 6px}}img{{max-width:100%}}</style>{body}")
    return page


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
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    return "".join(out)
