"""What `bench`, `plan` and `deploy` are given, checked before anything starts or is written.

Every refusal is an `InputError` whose message is one line: the option (or file, line and column), the
bad value, and what is valid. The CLI prints it and exits 1 (`refusing`), with no traceback.

`preflight` is perf_analyzer's first step: before any load, ask the server for the model's metadata, so
a dead server or a model it does not serve stops the run at once instead of counting failures for minutes.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import MISSING, fields
from pathlib import Path

from tritonize.planner.scenarios import PIPELINES, SCENARIO_DIR, Scenario, WordCounts


class InputError(ValueError):
    """A bad value given to bench, plan or deploy; the message is the one line the user sees."""


def read_json(path: Path, what: str):
    """A JSON file's content; an InputError says where it is not JSON (FILE:LINE:COL) or why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: cannot read the {what}: {e}") from None


def _hint(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- numbers -----------------------------------------------------------------------------------------
def whole_numbers(option: str, text: str, low: int = 1) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; anything else names the option, the bad item and what is valid."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise InputError(f"{option} {text!r}: give comma-separated whole numbers >= {low}, e.g. {option} {max(low, 1)},4,16")
    values = []
    for item in items:
        if not re.fullmatch(r"[+-]?\d+", item):
            raise InputError(f"{option} {text!r}: {item!r} is not a whole number; give comma-separated whole numbers >= {low}")
        if int(item) < low:
            raise InputError(f"{option} {text!r}: {item} is below {low}; give comma-separated whole numbers >= {low}")
        values.append(int(item))
    return values


def at_least(option: str, value: float, low: float, *, strict: bool = False, why: str = "") -> float:
    """`value` if it is > low (strict) or >= low; otherwise one line naming the option and the limit."""
    ok = value == value and (value > low if strict else value >= low)  # NaN fails
    if not ok:
        raise InputError(f"{option} {value:g}: must be {'>' if strict else '>='} {low:g}{why}")
    return value


def plan_values(slo_ms: float, target_rps: float, headroom: float, percentile: int, seconds: float | None = None,
                rounds: int | None = None) -> None:
    """A plan's goals: a positive SLO and target, a headroom that keeps capacity to spare, a known percentile."""
    if percentile not in (50, 95, 99):
        raise InputError(f"--percentile {percentile}: must be 50, 95 or 99")
    at_least("--slo-ms", slo_ms, 0, strict=True, why=" (the latency the chosen percentile must stay within)")
    at_least("--target-rps", target_rps, 0, strict=True, why=" (the request rate the replicas must serve)")
    at_least("--headroom", headroom, 0, why=" (the spare capacity kept: 0.25 = 25%)")
    if headroom > 10:
        raise InputError(f"--headroom {headroom:g}: must be at most 10 (a fraction: 0.25 = 25% spare capacity)")
    if seconds is not None:
        at_least("--seconds", seconds, 1, why=" (seconds per load level)")
    if rounds is not None:
        at_least("--rounds", rounds, 1)


# A confirmation level lasts at least this long: near capacity an 8 s level passed or missed by chance
# (p95 29 ms, then 58-100 ms at the same rate on the same replica; docs/performance.md).
CONFIRM_MIN_S = 30.0


def confirm_seconds(seconds: float, given: float | None) -> float:
    """`plan --confirm-seconds`: as given (> 0), else 3x the levels' `--seconds` and at least CONFIRM_MIN_S."""
    if given is None:
        return max(3 * seconds, CONFIRM_MIN_S)
    return at_least("--confirm-seconds", given, 0, strict=True)


def threads_fit(threads: list[int], cpus: str | None) -> None:
    """ONNX Runtime threads per instance may not exceed the cores the server runs on: a 2-thread config
    measured on one pinned core measures contention, not the config."""
    cores = len(cpu_list(cpus)) if cpus else len(os.sched_getaffinity(0))
    over = [t for t in threads if t > cores]
    if over:
        where = f"the server is pinned to {cores} core(s) ({cpus})" if cpus else f"this machine gives the server {cores} core(s)"
        raise InputError(f"--threads {max(over)}: {where}; give --threads <= {cores}"
                         + (" or --no-pin" if cpus and cores < len(os.sched_getaffinity(0)) else ""))


def cpu_list(cpus: str) -> list[int]:
    """taskset's list ('0', '0-3', '0,2') as core numbers."""
    out: list[int] = []
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


# -- scenarios ---------------------------------------------------------------------------------------
def known_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.json"))


def scenario(text: str) -> Scenario:
    """A scenario by name (tritonize/planner/scenarios) or JSON file, every field checked."""
    path = Path(text)
    if path.is_dir():
        raise InputError(f"--scenario {text}: a directory; give a scenario name ({', '.join(known_scenarios())}) or a JSON file")
    if not path.is_file():
        known = known_scenarios()
        if text not in known:
            raise InputError(f"--scenario {text!r}: no such scenario or file{_hint(text, known)}; "
                             f"known scenarios: {', '.join(known)} (or a path to a JSON file)")
        path = SCENARIO_DIR / f"{text}.json"
    return scenario_fields(read_json(path, "scenario file"), str(path))


def _check_fields(raw: dict, cls: type, where: str, what: str) -> None:
    valid = [f.name for f in fields(cls)]
    for key in raw:
        if key not in valid:
            raise InputError(f"{where}: unknown {what} field {key!r}{_hint(str(key), valid)}; valid fields: {', '.join(valid)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in raw]
    if missing:
        raise InputError(f"{where}: {what} field {missing[0]!r} is missing; required: {', '.join(required)}")


def _number(where: str, field: str, value, low: float, whole: bool) -> None:
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < low:
        raise InputError(f"{where}: field {field!r} is {value!r}; must be a {'whole ' if whole else ''}number >= {low:g}")


def scenario_fields(raw, where: str) -> Scenario:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: a scenario is a JSON object with the fields {', '.join(f.name for f in fields(Scenario))}")
    _check_fields(raw, Scenario, where, "scenario")
    for key in ("name", "model"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise InputError(f"{where}: field {key!r} is {raw[key]!r}; must be a non-empty string")
    if raw["pipeline"] not in PIPELINES:
        raise InputError(f"{where}: field 'pipeline' is {raw['pipeline']!r}; must be one of {', '.join(sorted(PIPELINES))}")
    for key, low in (("rows_per_request", 1), ("seed", 0), ("pool_size", 1), ("bad_every", 0)):
        if key in raw:
            _number(where, key, raw[key], low, whole=True)
    for key, kind in (("params", dict), ("questions", list), ("words", dict)):
        if key in raw and not isinstance(raw[key], kind):
            raise InputError(f"{where}: field {key!r} must be a JSON {'object' if kind is dict else 'array'}, got {raw[key]!r}")
    words = raw.get("words", {})
    _check_fields(words, WordCounts, f"{where}: field 'words'", "words")
    for key, value in words.items():
        _number(where, f"words.{key}", value, 1 if key in ("min", "max") else 0, whole=key in ("min", "max"))
    if words.get("min", WordCounts.min) > words.get("max", WordCounts.max):
        raise InputError(f"{where}: field 'words.min' ({words.get('min', WordCounts.min)}) is above 'words.max' "
                         f"({words.get('max', WordCounts.max)})")
    return Scenario(**raw)


# -- models and servers ------------------------------------------------------------------------------
def pipelines(names: list[str]) -> list[str]:
    """The entry points among a server's models: a pipeline's steps (NAME_model, NAME_stream, ...) left out."""
    names = sorted(set(names))
    return [n for n in names if not any(n != m and n.startswith(m + "_") for m in names)]


def repository_model(repository: Path, model: str) -> None:
    """A locally started server serves `model` from `repository`: refuse a model it does not hold."""
    repository = Path(repository)
    if not repository.is_dir():
        raise InputError(f"--repository {repository}: no such folder; convert a model into it first (`tritonize convert ...`)")
    if not (repository / model / "config.pbtxt").is_file():
        held = pipelines([p.parent.name for p in repository.glob("*/config.pbtxt")])
        raise InputError(f"--model {model!r}: not in {repository}{_hint(model, held)}; its models: {', '.join(held) or 'none'}")


def preflight(url: str, protocol: str, model: str, timeout_s: float = 10.0) -> dict:
    """The model's metadata from the server at `url`, asked before any load (as perf_analyzer does);
    a dead server or an unknown model is an InputError naming the URL or listing the served models."""
    from tritonclient.utils import InferenceServerException

    if protocol not in ("grpc", "http"):
        raise InputError(f"--protocol {protocol!r}: must be grpc or http")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as grpc

            client = grpc.InferenceServerClient(url)
            ask = {"client_timeout": timeout_s}
        else:
            import tritonclient.http as http

            client = http.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
            ask = {}
    except Exception as e:  # a malformed host:port
        raise InputError(f"--url {url!r}: not a host:port ({e})") from None
    try:
        try:
            client.is_server_live(**ask)
        except Exception as e:
            reason = re.sub(r"\s+", " ", str(e) or type(e).__name__)[:200]
            raise InputError(f"--url {url}: no Triton server answers over {protocol} ({reason}); "
                             f"start one (`tritonize serve`) or check --url") from None
        try:
            metadata = client.get_model_metadata(model, **ask)
        except InferenceServerException:
            raise InputError(f"--model {model!r}: the server at {url} does not serve it; its models: "
                             f"{', '.join(served_models(client, ask)) or 'none'}") from None
        return metadata if isinstance(metadata, dict) else {"name": getattr(metadata, "name", model)}
    finally:
        client.close()


def served_models(client, ask: dict) -> list[str]:
    """The pipelines a server has loaded (its statistics list every loaded model; the repository index
    sits behind the server's key)."""
    try:
        stats = client.get_inference_statistics(as_json=True, **ask) if ask else client.get_inference_statistics()
    except Exception:
        return []
    return pipelines([m["name"] for m in stats.get("model_stats", [])])


# -- results and files -------------------------------------------------------------------------------
def plan_file(option: str, path: Path) -> Path:
    """A saved results.json: a folder, a missing file or bad JSON is named in one line."""
    path = Path(path)
    if path.is_dir():
        inside = path / "results.json"
        raise InputError(f"{option} {path}: a directory; give the plan's results file"
                         + (f" ({inside})" if inside.is_file() else " (`tritonize plan` writes results.json)"))
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file (`tritonize plan` writes results.json)")
    raw = read_json(path, "plan file")
    if not isinstance(raw, dict) or not isinstance(raw.get("points"), list):
        raise InputError(f"{path}: not a results file of `tritonize plan` (no 'points')")
    return path


def all_failed(runs: list[dict]) -> str | None:
    """When every request of every load level failed: one line with the count and the first error Locust
    recorded (its failures CSV), else None."""
    requests = sum(int(r.get("requests", 0)) for r in runs)
    failures = sum(int(r.get("failures", 0)) for r in runs)
    if not runs or requests == 0 or failures < requests:
        return None
    first = ""
    for r in runs:
        path = Path(f"{r.get('csv_prefix', '')}_failures.csv")
        if path.is_file():
            import csv

            with open(path, newline="") as f:
                row = next(csv.DictReader(f), None)
            if row and row.get("Error"):
                first = "; first error: " + re.sub(r"\s+", " ", row["Error"])[:300]
                break
    if not first and runs:
        first = f"; Locust's record of them: {runs[0].get('csv_prefix', '')}_failures.csv"
    return f"every request failed ({failures} of {requests}){first}"


def unique_slugs(names: list[str], limit: int = 120) -> list[str]:
    """File-name forms of system names: readable (runs of other characters become one '_'), whole
    (never cut into a collision: a name past `limit` keeps a hash of the whole), and unique."""
    import hashlib

    out: list[str] = []
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", name.replace("<=", " le ")).strip("_") or "system"
        if len(slug) > limit:
            slug = f"{slug[: limit - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        base, n = slug, 2
        while slug in out:
            slug, n = f"{base}_{n}", n + 1
        out.append(slug)
    return out
