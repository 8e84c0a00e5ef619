"""The layout: one installed name (`tritonize`), family folders, arrows that run one way, no import
circle, and a wheel that converts, serves and answers from outside the checkout."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]
FAMILIES = ("chat", "encoders", "generation", "speech")
ENGINE_FAMILIES = ("encoders", "generation", "speech")  # chat runs no engine of its own: it calls them (BLS)


def _modules() -> dict[str, Path]:
    """Every module of the installed namespace, by dotted name, from the folders the build maps."""
    out = {}
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if any(name.startswith(other + ".") or name == other for other in PACKAGE_DIR if other != package and other.startswith(package + ".")):
                continue  # a folder mapped under another name (tritonize/ holds none today)
            out[name] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every tritonize module a file imports, at module level or inside a function."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "tritonize" or m.startswith("tritonize.")}


MODULES = _modules()
GRAPH = {name: {m for m in _imports(path, name) if m in MODULES and m != name} for name, path in MODULES.items()}


@pytest.mark.unit
def test_packages_listed_in_pyproject_are_exactly_the_folders():
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == folders


@pytest.mark.unit
def test_each_family_is_one_folder_in_runtime_and_converters():
    for place in ("tritonize/runtime", "converters"):
        for family in FAMILIES:
            assert (ROOT / place / family / "__init__.py").exists(), f"{place}/{family}/"
        prefixed = [p.name for p in (ROOT / place).glob("*.py") if p.name.startswith(("generation_", "tts_", "bert_"))]
        assert not prefixed, f"family prefixes in {place}/: {prefixed}"


@pytest.mark.unit
def test_no_import_circle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # A package importing its own submodule (`__init__` re-exports) is not a circle.
            if len(component) > 1 and not all(c.startswith(min(component, key=len) + ".") or c == min(component, key=len) for c in component):
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


ROOMS = ("runtime", "server", "gateway", "planner", "deploy", "converters", "client", "contract", "families")


def _room(module: str) -> str:
    """The floor a module lives on: a subpackage of tritonize named in ROOMS, else the CLI (the face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "cli"


# Who may import whom (DESIGN.md, the floors): the CLI on top; planner, deploy and gateway under it;
# converters, client and server on the ground beside each other; runtime apart. What a converter writes
# and the runtime reads is one contract that imports nothing of tritonize; converters also run the
# runtime's torch-free modules (the served code, e.g. the chatbot's FAQ embedding), never its engines' torch.
ALLOWED = {
    "cli": {"cli", *ROOMS},
    "planner": {"planner", "contract", "converters", "client", "server", "runtime"},  # runtime: in-process engine baselines
    "deploy": {"deploy", "contract", "planner"},
    "gateway": {"gateway", "client", "families"},  # the OpenAI API over the async clients; started by the CLI
    "converters": {"converters", "contract", "families"},  # the registry names the served classes the shims import
    "client": {"client"},
    "server": {"server", "contract"},
    "runtime": {"runtime", "contract"},
    "contract": {"contract"},
    "families": set(),  # names what it lists by import path, imports nothing
}


@pytest.mark.unit
def test_arrows_run_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            room, other = _room(module), _room(target)
            if other in ALLOWED[room] or target == "tritonize":
                continue
            if room == "converters" and other == "runtime":
                continue  # the served code: the chatbot embeds its FAQ with it, the VITS export masks with it
            wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


@pytest.mark.unit
def test_client_and_runtime_never_import_torch_or_converters():
    """torch and transformers only in the runtime's PyTorch engine modules (`engine_torch.py`), never elsewhere."""
    torch_engines = []
    for name, path in MODULES.items():
        if _room(name) not in ("client", "runtime", "server", "gateway"):
            continue
        if _room(name) == "runtime" and path.name == "engine_torch.py":
            torch_engines.append(name)
            continue
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"torch", "transformers", "optimum"}, f"{name} imports {imported & {'torch', 'transformers', 'optimum'}}"
    assert sorted(torch_engines) == sorted(["tritonize.runtime.engine_torch"] + [f"tritonize.runtime.{f}.engine_torch" for f in ENGINE_FAMILIES])


@pytest.mark.unit
def test_each_runtime_family_has_both_engines():
    for family in ENGINE_FAMILIES:
        for engine in ("engine_onnx.py", "engine_torch.py"):
            assert (ROOT / "tritonize/runtime" / family / engine).exists(), f"tritonize/runtime/{family}/{engine}"


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh venv with only the built wheel installed; the dev environment's dependencies are reached
    through a .pth (its own .pth files, the editable install among them, are not processed)."""
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel is made of, so setuptools' build/ never lands in the checkout.
    source = out / "source"
    for name in ["pyproject.toml", "README.md", *PACKAGE_DIR.values()]:  # tritonize/ holds all but the mapped two
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out / "dist"), str(source)]
    subprocess.run(build, check=True, cwd=out, capture_output=True, text=True)
    wheel = next((out / "dist").glob("tritonize-*.whl"))
    env = out / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    site = Path(subprocess.run([str(env / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(env / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    return env


def test_wheel_holds_one_top_level_name(wheel_env, tmp_path):
    wheel = next((wheel_env.parent / "dist").glob("tritonize-*.whl"))
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"tritonize"}
    shown = subprocess.run([str(wheel_env / "bin/python"), "-m", "pip", "show", "-f", "tritonize"], cwd=tmp_path,
                           check=True, capture_output=True, text=True).stdout
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    assert {f.split("/")[0] for f in files if ".dist-info" not in f and not f.startswith("..")} == {"tritonize"}
    for generic in ("client", "server", "runtime", "converters", "benchmarks", "gateway"):
        r = subprocess.run([str(wheel_env / "bin/python"), "-c", f"import {generic}"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, f"`import {generic}` works outside the checkout"


def test_wheel_converts_serves_and_embeds_outside_the_checkout(wheel_env, tmp_path):
    from tests.tiny_models import build_tiny_roberta_embedder

    checkpoint = build_tiny_roberta_embedder(tmp_path / "ckpt")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    bin_ = wheel_env / "bin"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    convert = subprocess.run([str(bin_ / "tritonize"), "convert", "bert", "--model", str(checkpoint), "--task", "embedding",
                              "--name", "tiny", "-r", "repo"], cwd=cwd, env=env, capture_output=True, text=True)
    assert convert.returncode == 0, convert.stdout + convert.stderr
    shim = (cwd / "repo/tiny/1/model.py").read_text()  # the default (fused) flavour: one model
    assert "from tritonize.runtime." in shim
    where = subprocess.run([str(bin_ / "python"), "-c", "import tritonize.runtime as r; print(r.__file__)"], cwd=cwd, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(wheel_env)), f"the served code would come from {where}, not the installed wheel"

    from tritonize.server.launcher import free_ports

    grpc, health = free_ports(2)  # distinct: both held while chosen
    serve = subprocess.Popen([str(bin_ / "tritonize"), "serve", "-r", "repo", "--http-port", "0", "--grpc-port", str(grpc),
                              "--metrics-port", "0", "--health-port", str(health)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # Wait for `tritonize serve`'s own readiness (the health endpoint), as a load balancer would:
        # Triton may answer a moment before the supervisor has finished starting.
        code = f"""
import time, urllib.request
from tritonize.client import Client
for _ in range(900):
    try:
        with urllib.request.urlopen("http://127.0.0.1:{health}/v2/health/ready", timeout=2) as r:
            if r.status == 200:
                break
    except Exception:
        time.sleep(0.2)
with Client("127.0.0.1:{grpc}") as c:
    v = c.embed(["first text", "second text"], model="tiny")
print(v.shape, round(float((v * v).sum(axis=1).min()), 4))
"""
        r = subprocess.run([str(bin_ / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        rows, norm = r.stdout.split(") ")
        assert rows.startswith("(2,") and float(norm) == pytest.approx(1.0, abs=1e-3)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        out, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, out
