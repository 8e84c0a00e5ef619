"""`tritonize bench` (Locust load test of one server) and `tritonize plan` (capacity planning sweep)."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from tritonize.commands.demo_steps import DemoStep
from tritonize.console import console
from tritonize.options import Repository

# `plan`'s goal when neither the command line nor a saved plan (--from) gives it.
PLAN_GOAL_DEFAULTS = {"slo_ms": 50.0, "percentile": 95, "target_rps": 1000.0, "headroom": 0.25}


def _ints(text: str, option: str = "--users", low: int = 1) -> list[int]:
    from tritonize.planner.inputs import whole_numbers

    return whole_numbers(option, text, low)


def _rates(text: str | None) -> list[float]:
    """--rates: offered request rates (open loop), e.g. 50,100,200; empty: closed-loop --users levels."""
    from tritonize.planner.inputs import InputError

    if not text:
        return []
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--rates {text!r}: give comma-separated request rates > 0 (req/s), e.g. --rates 50,100,200") from None
    if not rates or min(rates) <= 0:
        raise InputError(f"--rates {text!r}: give comma-separated request rates > 0 (req/s), e.g. --rates 50,100,200")
    return sorted(rates)


def _arrival(text: str) -> str:
    from tritonize.planner.inputs import InputError
    from tritonize.planner.load import ARRIVALS

    if text not in ARRIVALS:
        raise InputError(f"--arrival {text!r}: choose one of {', '.join(ARRIVALS)}")
    return text


RATES_HELP = ("Open loop: offered request rates (req/s), comma-separated, instead of --users: requests are sent on "
              "schedule whether or not earlier ones returned, latency counts from the scheduled time.")
ARRIVAL_HELP = "With --rates: poisson (exponential gaps) or constant (even gaps)."


def refusing(command):
    """The command with every InputError (a bad option, file or server) as one red line and exit 1."""
    import functools

    from tritonize.commands.conversion import fail
    from tritonize.planner.inputs import InputError

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as e:
            raise fail(str(e)) from None

    return run


def _pinning(pin: bool) -> tuple[str | None, str | None]:
    """Server on core 0, Locust on core 1 (the same for every system compared)."""
    if not pin:
        return None, None
    if (os.cpu_count() or 1) < 2:
        raise typer.BadParameter("--pin needs at least two cores")
    return "0", "1"


def _out(out: Path | None, kind: str) -> Path:
    return out or Path("bench_results") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


class Attached:
    """A server someone else started: Locust calls it; Triton's view needs its HTTP and metrics URLs."""

    def __init__(self, url: str, protocol: str, http_url: str | None, metrics_url: str | None):
        self.name, self.user, self._url = f"triton @ {url}", protocol, url
        self.stats_urls = (http_url, metrics_url)

    def start(self) -> str:
        return self._url

    def stop(self) -> None:
        pass


def _print_points(results) -> None:
    from tritonize.planner.report import LEVEL_COLUMNS, level_cells

    t = Table(title="load levels")
    for c in LEVEL_COLUMNS:
        t.add_column(c)
    for p in results.points:
        t.add_row(*level_cells(p))
    width = console.width
    console.width = max(width, 170)  # every column, also in a log file or a narrow terminal
    try:
        console.print(t)
    finally:
        console.width = width


def bench(
    scenario: str = typer.Option("embed-mix", help="Scenario name (tritonize/planner/scenarios) or JSON file."),
    model: str = typer.Option(None, help="Served pipeline (default: the scenario's)."),
    users: str = typer.Option("1,4,16", help="Load levels: concurrent Locust users, comma-separated (a step load)."),
    rates: str = typer.Option(None, help=RATES_HELP),
    arrival: str = typer.Option("poisson", help=ARRIVAL_HELP),
    seconds: float = typer.Option(10, help="Seconds per load level."),
    repository: Path = Repository,
    url: str = typer.Option(None, help="Attach to a running server (gRPC/HTTP host:port) instead of starting one."),
    http_url: str = typer.Option(None, help="With --url: its HTTP host:port, for Triton's statistics."),
    metrics_url: str = typer.Option(None, help="With --url: its metrics URL."),
    protocol: str = typer.Option("grpc", help="grpc or http."),
    via: str = typer.Option("direct", help="direct (tritonclient) or openai (through `tritonize gateway`, the OpenAI API)."),
    processes: int = typer.Option(1, help="Locust processes (one master + N workers) for more load than one core makes."),
    pin: bool = typer.Option(False, help="Pin the server to core 0 and Locust to core 1."),
    out: Path = typer.Option(None, help="Output folder (default: bench_results/bench-TIMESTAMP)."),
) -> None:
    """Load-test a served pipeline with Locust; report latency, throughput and Triton's own view."""
    from tritonize.planner import inputs
    from tritonize.planner.report import write_report
    from tritonize.planner.sweep import sweep
    from tritonize.planner.systems import TritonVariant, Variant, ViaGateway

    if via not in ("direct", "openai"):
        raise typer.BadParameter(f"--via must be direct or openai, not {via!r}")
    sc = inputs.scenario(scenario)
    sc.model = model or sc.model
    levels = _ints(users)
    offered, arrival = _rates(rates), _arrival(arrival)
    if offered and (via == "openai" or protocol not in ("grpc", "http")):
        raise inputs.InputError("--rates (open loop) drives Triton over grpc or http; --via openai runs closed-loop --users")
    inputs.at_least("--seconds", seconds, 1)
    inputs.at_least("--processes", processes, 1)
    if url:  # before any load: the server answers and serves the model (perf_analyzer's first step)
        inputs.preflight(url, protocol if protocol in ("grpc", "http") else "grpc", sc.model)
    else:
        inputs.repository_model(repository, sc.model)
    server_cpus, locust_cpus = _pinning(pin)
    out = _out(out, "bench")
    if url:
        system = Attached(url, protocol, http_url, metrics_url)
    else:
        system = TritonVariant(repository, sc.model, Variant(), out / "repository", cpus=server_cpus)
    if via == "openai":
        system = ViaGateway(system, cpus=server_cpus)  # the gateway shares the server's cores
        protocol = "openai"
    setup = {"scenario": sc.name, "seconds per level": seconds, "protocol": protocol, "locust processes": processes,
             "pinning": f"server cores {server_cpus}, Locust cores {locust_cpus}" if pin else "none",
             **({"offered rates (open loop)": rates, "arrival": arrival} if offered else {})}
    results = sweep([system], sc, levels, seconds, out, locust_cpus, processes, setup, protocol=protocol,
                    rates=offered or None, arrival=arrival)
    results.save(out / "results.json")
    _print_points(results)
    for run in results.runs:
        level = f"{run['offered_rps']:g}/s" if run.get("offered_rps") else f"{run['users']:>3}u"
        for name, s in run["triton"].items():
            console.print(f"  {level} {name}: queue {s['queue_ms']:.2f} ms, compute {s['compute_infer_ms']:.2f} ms, "
                          f"avg batch {s['avg_batch']:.2f}, executions {s['executions']}")
        pad = run["padding"]
        for key in (k for k in pad if k.startswith("tritonize_tokens_real_total")):
            computed = pad.get(key.replace("real", "computed"), 0)
            if pad[key]:
                console.print(f"  {level} padding {key.split('{')[1][:-1]}: tokens computed / real = {computed / pad[key]:.2f}")
    page = write_report(results, out, None, None, 95)
    console.print(f"report: {page} (Locust CSV/HTML in {out / 'locust'})")
    failed = inputs.all_failed(results.runs)
    if failed:  # a load that never succeeded is no measurement
        raise inputs.InputError(f"{failed} ({sc.model} at {url or 'the started server'})")


def plan(
    scenario: str = typer.Option("embed-mix", help="Scenario name (tritonize/planner/scenarios) or JSON file."),
    model: str = typer.Option(None, help="Served pipeline(s), comma-separated, e.g. an fp32 and an int8 conversion (default: the scenario's)."),
    repository: Path = Repository,
    max_batch_size: str = typer.Option("64", help="Grid: Triton's max_batch_size of the model step (the most rows one execution "
                                       "runs; its max_rows_per_run follows, and an ensemble above it is lowered to it)."),
    queue_delay_us: str = typer.Option("0", help="Grid: dynamic batcher max queue delay (µs)."),
    instances: str = typer.Option("1", help="Grid: model-step instances."),
    threads: str = typer.Option("1", help="Grid: ONNX Runtime threads per instance."),
    users: str = typer.Option("1,2,4,8,16,32", help="Offered loads: concurrent users, comma-separated."),
    rates: str = typer.Option(None, help=RATES_HELP + " Capacity is then searched between the measured rates."),
    arrival: str = typer.Option("poisson", help=ARRIVAL_HELP),
    search_levels: int = typer.Option(3, help="With --rates: extra levels per candidate searching its capacity (bisection "
                                              "between the highest passing and lowest missing rate, or above the grid)."),
    seconds: float = typer.Option(8, help="Seconds per load level."),
    rounds: int = typer.Option(1, help="Measure every level this many times (walking the levels up, then down) and pool them."),
    slo_ms: float = typer.Option(None, help="Latency SLO (ms) [default: 50, or the saved plan's with --from]."),
    percentile: int = typer.Option(None, help="SLO percentile: 50, 95 or 99 [default: 95, or the saved plan's with --from]."),
    target_rps: float = typer.Option(None, help="Request rate to plan replicas for [default: 1000, or the saved plan's with --from]."),
    headroom: float = typer.Option(None, help="Spare capacity to keep, 0.25 = 25% [default: 0.25, or the saved plan's with --from]."),
    baselines: bool = typer.Option(False, help="Also run dynamic batching off and FastAPI + PyTorch."),
    control: bool = typer.Option(False, help="With --baselines: a second, identical batching-off server (an A/A control), "
                                              "so the on / off ratios can be read against two identical servers' ratio."),
    pin: bool = typer.Option(True, help="Pin servers to core 0 and Locust to core 1."),
    apply: bool = typer.Option(False, help="Write the recommended settings into the repository."),
    confirm: bool = typer.Option(False, help="Measure the recommended config again and compare with the prediction."),
    confirm_seconds: float = typer.Option(None, help="With --confirm: seconds per confirmation level [default: 3 x --seconds, "
                                                     "at least 30]: near capacity a short level passes or misses by chance."),
    source: Path = typer.Option(None, "--from", help="Re-derive a plan from a saved results.json (no load run)."),
    out: Path = typer.Option(None, help="Output folder (default: bench_results/plan-TIMESTAMP)."),
) -> None:
    """Sweep server configurations x offered loads; recommend a config and replicas for an SLO."""
    from tritonize.planner import inputs
    from tritonize.planner.capacity import PlanResults, recommend, with_confirmation
    from tritonize.planner.report import replica_text, write_report
    from tritonize.planner.sweep import confirm as confirm_rate
    from tritonize.planner.sweep import sweep
    from tritonize.planner.systems import FastApiBaseline, TritonVariant, Variant, replica_of, write_back, write_variant

    saved = PlanResults.load(inputs.plan_file("--from", source)) if source else None
    # What the command line leaves out: the saved plan's goal with --from (re-deriving one figure keeps the others), else the defaults.
    goal = {**PLAN_GOAL_DEFAULTS, **{k: v for k, v in ((saved.recommendation or {}) if saved else {}).items() if k in PLAN_GOAL_DEFAULTS}}
    slo_ms = goal["slo_ms"] if slo_ms is None else slo_ms
    percentile = goal["percentile"] if percentile is None else percentile
    target_rps = goal["target_rps"] if target_rps is None else target_rps
    headroom = goal["headroom"] if headroom is None else headroom
    inputs.plan_values(slo_ms, target_rps, headroom, percentile, None if source else seconds, rounds)
    confirm_s = inputs.confirm_seconds(seconds, confirm_seconds)
    if control and not baselines:
        raise typer.BadParameter("--control copies the batching-off baseline: add --baselines")
    out = _out(out, "plan")
    if saved:
        results = saved
        stale = results.setup.pop("confirmation", None)  # of the saved plan: re-derived below, never carried
        if stale or results.confirmation:
            results.setup["re-derived from"] = f"{source} (no load run); the saved plan's confirmation is not carried over"
        results.confirmation = None
        sc = None
    else:
        sc = inputs.scenario(scenario)
        if baselines and sc.pipeline not in FastApiBaseline.TASKS:
            raise typer.BadParameter(f"--baselines has a FastAPI + PyTorch server for {' and '.join(FastApiBaseline.TASKS)} scenarios, not {sc.pipeline!r}")
        models = [m.strip() for m in (model or sc.model).split(",") if m.strip()]
        levels = _ints(users)
        offered, arrival = _rates(rates), _arrival(arrival)
        inputs.at_least("--search-levels", search_levels, 0)
        if offered and baselines:
            raise inputs.InputError("--rates (open loop) drives Triton servers; the FastAPI + PyTorch baseline runs closed-loop: "
                                    "use --users with --baselines")
        server_cpus, locust_cpus = _pinning(pin)
        inputs.threads_fit(_ints(threads, "--threads"), server_cpus)
        for m in models:
            inputs.repository_model(repository, m)
        sc.model = models[0]
        grid = [Variant(b, d, i, t) for b, d, i, t in itertools.product(
            _ints(max_batch_size, "--max-batch-size"), _ints(queue_delay_us, "--queue-delay-us", 0), _ints(instances, "--instances"),
            _ints(threads, "--threads"))]
        systems = [TritonVariant(repository, m, v, out / f"repository-{len(grid) * j + k}", server_cpus)
                   for j, m in enumerate(models) for k, v in enumerate(grid)]
        n_candidates = len(systems)
        if baselines:
            off = TritonVariant(repository, sc.model, Variant(dynamic_batching=False, threads=grid[0].threads), out / "repository-off", server_cpus)
            systems.append(off)
            if control:
                systems.append(TritonVariant(repository, sc.model, off.variant, out / "repository-off-copy", server_cpus, copy_of=off.name))
            systems.append(FastApiBaseline(_hub_id(repository, sc.model), server_cpus, task=sc.pipeline))
        load = ({"offered rates (open loop, req/s)": rates, "arrival": arrival, "capacity search levels": search_levels}
                if offered else {"offered loads (users)": users})
        setup = {"scenario": sc.name, "seconds per level": seconds, "rounds": rounds, **load,
                 "pinning": f"server on core {server_cpus}, Locust on core {locust_cpus}, the same for every system" if pin else "none"}
        results = sweep(systems, sc, levels, seconds, out, locust_cpus, 1, setup, rounds=rounds, rates=offered or None,
                        arrival=arrival, search=(slo_ms, percentile, search_levels), searched=list(range(n_candidates)))
        peaks = results.setup.get("peak server memory (MiB)", {})
        results.replicas = {s.name: replica_of(s, peaks.get(s.name)) for s in systems if isinstance(s, TritonVariant)}
        results.candidates = [s.name for s in systems[:n_candidates]]
        results.variants = {s.name: {"model": s.model, **asdict(s.variant), **({"copy_of": s.copy_of} if s.copy_of else {})}
                            for s in systems if isinstance(s, TritonVariant)}
    rec = recommend(results.points, slo_ms, percentile, target_rps, headroom, results.candidates or None)
    if rec.system:
        rec.replica = results.replicas.get(rec.system)
        chosen_model, chosen = _chosen(results, rec.system)
        if (repository / chosen_model).is_dir():  # the chosen configuration, servable as measured
            rec.repository = str(write_variant(repository, chosen_model, chosen, out / "recommended-repository").resolve())
    if confirm and rec.system and sc:
        chosen_model, chosen = _chosen(results, rec.system)
        system = TritonVariant(repository, chosen_model, chosen, out / "repository-confirm", server_cpus)
        confirmed = confirm_rate(system, sc, rec.max_rps, confirm_s, out / "confirm", slo_ms, percentile, locust_cpus, arrival)
        results.setup["confirmation seconds per level"] = confirm_s
        if rec.replica and confirmed.get("peak_memory_mib"):
            rec.replica["memory_mib"] = round(max(rec.replica.get("memory_mib") or 0, confirmed["peak_memory_mib"]), 1)
        predicted = rec.max_rps
        rec = with_confirmation(rec, confirmed)
        held = confirmed["confirmed_rps"]
        results.setup["confirmation"] = (f"predicted {predicted:.1f} req/s; at that rate a fresh server achieved {confirmed['achieved_rps']:.1f} "
                                         f"req/s, p{percentile} {confirmed[f'p{percentile}_ms']:.0f} ms: "
                                         + ("held" if confirmed["met"] else f"MISSED, confirmed {held:.1f} req/s ({held / predicted:.2f}x)"))
        results.confirmation = {"system": confirmed["system"], "predicted_rps": predicted, "confirmed_rps": held if not confirmed["met"] else predicted,
                                "met": confirmed["met"], "points": confirmed["levels"], "runs": confirmed["runs"]}
        console.print(("[bold red]" if not confirmed["met"] else "") + "confirmation: " + results.setup["confirmation"]
                      + ("[/bold red]" if not confirmed["met"] else ""))
    results.recommendation = asdict(rec)
    results.save(out / "results.json")
    _print_points(results)
    t = Table(title=f"max req/s with p{percentile} <= {slo_ms:g} ms")
    t.add_column("system")
    t.add_column("req/s")
    for s, c in sorted(rec.capacity.items(), key=lambda kv: -kv[1]):
        t.add_row(s, f"{c:.1f}")
    console.print(t)
    console.print(f"[bold]{rec.note}[/bold]")
    if rec.replica:
        console.print(f"one replica: {replica_text(rec.replica)}" + (f"; its repository: {rec.repository}" if rec.repository else ""))
    if apply and rec.system:
        path = write_back(repository, *_chosen(results, rec.system))
        console.print(f"wrote the recommended settings into {path}")
    page = write_report(results, out, rec, slo_ms, percentile)
    console.print(f"report: {page}; raw results: {out / 'results.json'}")
    failed = None if source else inputs.all_failed(results.runs)
    if failed:  # no level of any configuration served a request: nothing was measured
        raise inputs.InputError(f"{failed}: no configuration was measured")


def _chosen(results, system: str):
    """The pipeline and Variant behind a system name of a sweep."""
    from tritonize.planner.systems import Variant

    fields = dict(results.variants[system])
    return fields.pop("model"), Variant(**fields)


def _hub_id(repository: Path, model: str) -> str:
    import json

    manifest = json.loads((repository / model / "tritonize.json").read_text())
    return manifest["report"]["source"]


# -- demo ------------------------------------------------------------------------------------------
DEMO_USERS, DEMO_SECONDS = 4, 5


def _demo_load(server, model: str | None = None) -> None:
    """A short Locust run (embed-mix texts, 4 users) against the demo's embedder (or `model`) on the running server."""
    import tempfile

    from tritonize.planner.load import run_locust
    from tritonize.planner.scenarios import Scenario
    from tritonize.contract.model_config import engine_model

    sc = Scenario.load("embed-mix")  # its model is the demo's all-minilm-l6-v2
    sc.model = model or sc.model
    with tempfile.TemporaryDirectory(prefix="tritonize-demo-load-") as tmp:
        path = sc.save(Path(tmp) / "scenario.json")
        with console.status(f"Locust: {DEMO_USERS} users for {DEMO_SECONDS} s ..."):
            r = run_locust(path, server.grpc_url, "grpc", DEMO_USERS, DEMO_SECONDS, Path(tmp) / "demo", "demo",
                           triton_http=server.http_url, triton_metrics=server.metrics_url)
    batch = r.triton.get(engine_model(server.config.model_repository, sc.model) or "", {}).get("avg_batch")
    console.print(f"Locust, {DEMO_USERS} users for {DEMO_SECONDS} s, {sc.name} texts to {sc.model} over gRPC: "
                  f"{r.rps:.0f} req/s, p50 {r.p50_ms:.0f} ms, p95 {r.p95_ms:.0f} ms, {r.failures} failures"
                  + (f", {batch:.1f} texts per engine run (dynamic batching)" if batch else ""))
    console.print("More: `tritonize bench` (load levels, report) and `tritonize plan` (capacity), see the README.")


DEMO = DemoStep("load test: Locust against the served embedder", None, _demo_load)


def register(app: typer.Typer) -> None:
    app.command("bench")(refusing(bench))
    app.command("plan")(refusing(plan))
