"""The image's two stages, run without Docker (none here): what they do, done the way the Dockerfile says.

- build stage: exactly what its `COPY` lines copy from the context (through .dockerignore, read as Docker
  reads it) lands in an empty folder; `pip wheel .` there; the wheel goes into a fresh venv (its dependencies
  reached through a .pth to the dev environment, the converter stack's torch among them: nothing downloads);
  `tritonize demo --convert-only` writes the demo set from outside the checkout, as its `RUN` does.
- runtime stage: a fresh venv with the same wheel and only the distributions its `pip install` line's extras
  pull in (a .pth to a folder that links just those; torch provably absent), plus the embedded tritonserver
  from nvidia-pytriton where the image has NVIDIA's own; the image's ENTRYPOINT (only the binary, bind address,
  paths and ports replaced, as tests/deploy/test_dockerfile.py does) serves the converted repository; the
  typed client, run in that same venv, calls every family once; the gateway (the image's second entrypoint)
  answers an OpenAI request; SIGTERM stops both cleanly.
- a folder left out of the copy fails the simulated build (the image once missed `gateway/`).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.test_dockerfile import (
    PORTS, ROOT, build_stage, context_files, entrypoint, gateway_command, local_command, options, runtime_stage,
)

EMBEDDER, GPT2, T5, VOICE, CHATBOT = "all-minilm-l6-v2", "gpt2-tiny-demo", "t5-tiny-demo", "demo-vits", "tritonize-faq"
# Stands in for the tritonserver NVIDIA's image brings (its Python dependencies are not used: only the binary).
EMBEDDED_SERVER = "nvidia-pytriton"


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)


# -- the build stage ----------------------------------------------------------------------------------------
def copy_build_context(rootfs: Path, ignore_text: str | None = None) -> Path:
    """The build stage's filesystem after its instructions up to the first RUN (WORKDIR and context COPYs),
    under rootfs; returns the WORKDIR the RUN runs in. A source nothing in the context matches fails, as in Docker."""
    sent = context_files(ROOT, ignore_text)
    workdir = "/"
    for ins in build_stage():
        kind, value = ins["instruction"], ins["value"]
        if kind == "RUN":
            break
        if kind == "WORKDIR":
            workdir = posixpath.join(workdir, value)
            (rootfs / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        if kind != "COPY" or "--from=" in value:
            continue
        parts = [p for p in shlex.split(value) if not p.startswith("--")]
        sources, dest = parts[:-1], posixpath.join(workdir, parts[-1])
        into_folder = dest.endswith("/") or len(sources) > 1 or parts[-1] in (".", "./")
        for src in sources:
            src = posixpath.normpath(src).strip("/")
            if src in (".", ""):
                matched = [(p, p) for p in sent]
            elif src in sent:  # a file (or link): into the folder, or as the destination itself
                matched = [(src, posixpath.basename(src) if into_folder else "")]
            else:  # a folder: its contents
                matched = [(p, p[len(src) + 1:]) for p in sent if p.startswith(src + "/")]
            if not matched:
                raise FileNotFoundError(f"COPY {src}: not found in the build context")
            for path, rel in matched:
                target = rootfs / posixpath.join(dest, rel).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / path).is_symlink():  # Docker copies links as links
                    target.symlink_to(os.readlink(ROOT / path))
                else:
                    shutil.copy2(ROOT / path, target)
    return rootfs / workdir.lstrip("/")


def build_wheel(workdir: Path, dist: Path) -> subprocess.CompletedProcess:
    """The build stage's `pip wheel --no-deps -w /dist .`, offline (the build backend comes from the dev venv)."""
    (first_run,) = [i["value"] for i in build_stage() if i["instruction"] == "RUN"][:1]
    assert re.match(r"pip wheel .*--no-deps .*-w /dist \.( |$)", first_run), first_run
    return run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, "."], cwd=workdir)


def fresh_venv(path: Path, wheel: Path, site: Path) -> Path:
    """A venv with only `wheel` installed and `site` on its path through a .pth (whose own .pth files are not read)."""
    run([sys.executable, "-m", "venv", "--without-pip", path], check=True)
    purelib = Path(run([path / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       check=True).stdout.strip())
    (purelib / "dependencies.pth").write_text(f"{site}\n")
    run([sys.executable, "-m", "pip", "--python", path / "bin/python", "install", "-q", "--no-deps", "--no-index", wheel],
        check=True)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="module")
def wheel(work) -> Path:
    workdir = copy_build_context(work / "build-rootfs")
    r = build_wheel(workdir, work / "dist")
    assert r.returncode == 0, r.stdout + r.stderr
    (found,) = (work / "dist").glob("tritonize-*.whl")
    return found


def image_env(home: Path) -> dict:
    """What the stages run with: no checkout on the path, nothing downloads, a HOME of their own."""
    home.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TRITONIZE"))}
    return {**keep, "HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def converted(wheel, work) -> Path:
    """The build stage's `tritonize demo --convert-only --repository /models`, from a folder outside the checkout."""
    (run_line,) = [i["value"] for i in build_stage() if i["instruction"] == "RUN" and "--convert-only" in i["value"]]
    assert "HF_HUB_OFFLINE=1 tritonize demo --convert-only --repository /models" in run_line
    env = fresh_venv(work / "build-venv", wheel, Path(sysconfig.get_paths()["purelib"]))
    cwd = work / "build-cwd"
    cwd.mkdir()
    r = run([env / "bin/tritonize", "demo", "--convert-only", "--repository", work / "models"], cwd=cwd,
            env=image_env(work / "build-home"), timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return work / "models"


def test_the_build_stage_builds_the_wheel_from_what_it_copies(wheel):
    import tomllib

    names = zipfile.ZipFile(wheel).namelist()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} is not in the image's wheel"
    assert "tritonize/converters/chat/demo_faq.jsonl" in names  # package data travels too
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_the_build_stage_converts_the_demo_set(converted):
    models = {p.parent.name for p in converted.glob("*/config.pbtxt")}
    assert {EMBEDDER, GPT2, T5, VOICE, CHATBOT, f"{CHATBOT}_stream"} <= models, sorted(models)


# -- the runtime stage --------------------------------------------------------------------------------------
def runtime_extras() -> list[str]:
    runs = " ".join(i["value"] for i in runtime_stage() if i["instruction"] == "RUN")
    (extras,) = re.findall(r"\.whl\)\[([a-z,]+)\]", runs)
    return extras.split(",")


def requirement_closure(wheel: Path, extras: list[str]) -> set[str]:
    """The distributions `pip install 'WHEEL[extras]'` installs besides the wheel (as the dev venv resolves them)."""
    meta_name = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    me = canonicalize_name(meta["Name"])
    todo = [(Requirement(r), set(extras)) for r in meta.get_all("Requires-Dist") or []]
    todo = [(r, {""} | ex) for r, ex in todo]
    seen: set[str] = set()
    seen_extras: dict[str, set] = {}
    while todo:
        req, active = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in active):
            continue
        name = canonicalize_name(req.name)
        if name == me:  # tritonize[runtime] inside another extra
            todo += [(Requirement(r), {""} | set(req.extras)) for r in meta.get_all("Requires-Dist") or []]
            continue
        new_extras = set(req.extras) - seen_extras.get(name, set())
        if name in seen and not new_extras:
            continue
        seen.add(name)
        seen_extras.setdefault(name, set()).update(req.extras)
        todo += [(Requirement(r), {""} | set(req.extras)) for r in metadata.distribution(name).requires or []]
    return seen


def link_distributions(names: set[str], folder: Path) -> None:
    """A site folder holding only `names`: a link per top-level entry of each one's installed files (a folder
    shared with distributions outside `names`, like google/, is made real and linked one level deeper)."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = {canonicalize_name(d.metadata["Name"]): [f.parts for f in d.files or [] if f.parts and f.parts[0] != ".."]
             for d in metadata.distributions(path=[str(site)])}
    tops = {parts[0] for name in names for parts in files[name]}
    owners: dict[tuple, set] = {}
    for name, paths in files.items():
        for parts in paths:
            if parts[0] in tops:
                for depth in range(1, len(parts) + 1):
                    owners.setdefault(parts[:depth], set()).add(name)
    wanted = {k for k, v in owners.items() if v & names}

    def place(prefix: tuple) -> None:
        if (site.joinpath(*prefix)).is_dir() and not owners[prefix] <= names:
            (folder.joinpath(*prefix)).mkdir(parents=True, exist_ok=True)
            for child in sorted(k for k in wanted if len(k) == len(prefix) + 1 and k[:-1] == prefix):
                place(child)
        elif site.joinpath(*prefix).exists():
            folder.joinpath(*prefix).parent.mkdir(parents=True, exist_ok=True)
            folder.joinpath(*prefix).symlink_to(site.joinpath(*prefix))

    for top in sorted(k for k in wanted if len(k) == 1):
        place(top)


@pytest.fixture(scope="module")
def runtime_venv(wheel, work) -> Path:
    names = requirement_closure(wheel, runtime_extras()) | {canonicalize_name(EMBEDDED_SERVER)}
    assert "torch" not in names and "transformers" not in names, sorted(names)
    site = work / "runtime-site"
    link_distributions(names, site)
    return fresh_venv(work / "runtime-venv", wheel, site)


def test_the_runtime_stage_has_no_torch_and_everything_it_serves_imports(runtime_venv, work):
    env = image_env(work / "runtime-home")
    for absent in ("torch", "transformers", "optimum"):
        r = run([runtime_venv / "bin/python", "-c", f"import {absent}"], cwd=work, env=env)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, f"{absent} imports in the runtime stage"
    code = ("import tritonize, tritonize.runtime.triton, tritonize.client, tritonize.gateway.app, tritonize.cli; "
            "print(tritonize.__file__)")
    r = run([runtime_venv / "bin/python", "-c", code], cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(runtime_venv)), r.stdout  # the wheel, not the checkout


CALLS = """
import json, sys
import numpy as np
from tritonize.client import ChatClient, Client, GenerationClient, SpeechClient
url = sys.argv[1]
out = {}
query, docs = "How do I keep latency low under load?", [
    "Dynamic batching groups concurrent requests so the GPU does more work per call.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Set a latency budget, measure p99, and add replicas before the queue grows.",
    "The football match ended in a draw after extra time.",
]
with Client(url) as c:
    q, d = c.embed([query], model="%(embedder)s"), c.embed(docs, model="%(embedder)s")
out["embed"] = {"shape": list(d.shape), "norms": np.linalg.norm(d, axis=1).tolist(), "scores": (d @ q[0]).tolist()}
with GenerationClient(url) as c:
    pieces = list(c.stream("the quick brown fox", model="%(gpt2)s", max_new_tokens=12, temperature=0.8, seed=1))
    t5 = c.generate_chunk("translate: the server stays ready", model="%(t5)s", max_new_tokens=8)
out["generate"] = {"pieces": pieces, "t5_tokens": len(t5.token_ids), "t5_finish": t5.finish_reason}
with SpeechClient(url) as c:
    audio = c.synthesize("Hello from Triton. A second sentence!", model="%(voice)s", seed=1)
out["speech"] = {"rate": audio.rate, "seconds": audio.seconds, "dtype": str(audio.samples.dtype),
                 "peak": int(np.abs(audio.samples.astype(np.int32)).max())}
with ChatClient(url) as c:
    a = c.ask("What command launches Triton with my converted models?", model="%(chatbot)s", mode="auto", max_new_tokens=8)
out["chat"] = {"text": a.text, "source": a.source, "generated": a.generated, "finish": a.finish_reason, "score": a.score}
print(json.dumps(out))
""" % dict(embedder=EMBEDDER, gpt2=GPT2, t5=T5, voice=VOICE, chatbot=CHATBOT)


def wait_ready(url: str, proc: subprocess.Popen, seconds: float, headers: dict | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} never answered (exit code {proc.poll()})")


def stop(proc: subprocess.Popen, timeout: float = 90) -> str:
    """What `docker stop` does: SIGTERM to PID 1, then (here: only if it hangs) SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def test_the_runtime_stage_serves_every_family_and_the_gateway(runtime_venv, converted, work):
    from tritonize.server.launcher import free_ports

    env = image_env(work / "runtime-home")
    cwd = work / "runtime-cwd"
    cwd.mkdir(exist_ok=True)
    ports = dict(zip([*PORTS, "gateway"], free_ports(len(PORTS) + 1)))
    command = local_command(entrypoint(), converted, work / "engines", {n: ports[n] for n in PORTS})
    command[0] = str(runtime_venv / "bin" / Path(command[0]).name)  # the image's `tritonize`, from the runtime venv
    serve = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    gateway = None
    try:
        wait_ready(f"http://127.0.0.1:{ports['health']}/v2/health/ready", serve, 600)  # the HEALTHCHECK's probe
        grpc = f"127.0.0.1:{ports['grpc']}"
        r = run([runtime_venv / "bin/python", "-c", CALLS, grpc], cwd=cwd, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])

        embed = out["embed"]
        assert embed["shape"] == [4, 384] and all(abs(n - 1) < 1e-4 for n in embed["norms"])
        scores = embed["scores"]  # the real MiniLM: the latency advice is nearer the latency question than recipes or football
        assert scores[2] > scores[1] + 0.1 and scores[2] > scores[3] + 0.1, scores
        gen = out["generate"]
        assert gen["pieces"] and "".join(gen["pieces"]).strip(), gen
        assert 0 < gen["t5_tokens"] <= 8 and gen["t5_finish"] in ("length", "eos", "stop"), gen
        speech = out["speech"]
        assert speech["dtype"] == "int16" and speech["rate"] > 0 and speech["seconds"] > 0.1 and speech["peak"] > 0, speech
        chat = out["chat"]
        assert not chat["generated"] and chat["source"] not in ("generated", "no-match") and chat["text"].strip(), chat
        assert chat["source"] == "serve" and "tritonize serve" in chat["text"], chat  # the FAQ entry on starting Triton

        # The image's second entrypoint: the OpenAI gateway, as the header runs it (loopback here, a key file of our own).
        keys = work / "api_keys"
        keys.write_text("sk-image-test\n")
        argv = gateway_command()
        opts = {**options(argv), "--url": grpc, "--host": "127.0.0.1", "--port": str(ports["gateway"]), "--api-key-file": str(keys)}
        gateway = subprocess.Popen([str(runtime_venv / "bin" / argv[0]), argv[1], *[x for kv in opts.items() for x in kv]],
                                   cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        auth = {"Authorization": "Bearer sk-image-test"}
        base = f"http://127.0.0.1:{ports['gateway']}/v1"
        wait_ready(f"{base}/models", gateway, 60, auth)
        request = urllib.request.Request(f"{base}/embeddings", data=json.dumps({"model": EMBEDDER, "input": ["hello"]}).encode(),
                                         headers={**auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            body = json.loads(resp.read())
        assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 384, body
        with pytest.raises(urllib.error.HTTPError) as unauthorised:
            urllib.request.urlopen(urllib.request.Request(f"{base}/models"), timeout=10)
        assert unauthorised.value.code == 401
    finally:
        gateway_out = stop(gateway, 30) if gateway is not None else ""
        serve_out = stop(serve)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (so the exit status says what stopped
    # it): -SIGTERM after a clean shutdown; a hang would have ended in stop()'s SIGKILL.
    assert gateway.returncode in (0, -signal.SIGTERM) and "Traceback" not in gateway_out, (gateway.returncode, gateway_out)
    assert serve.returncode == 0, serve_out
    assert "tritonserver stopped" in serve_out, serve_out


# -- a folder left out ---------------------------------------------------------------------------------------
@pytest.mark.unit  # no conversion, no server: a copy and a failing `pip wheel` (under a second)
@pytest.mark.parametrize("leave_out, named", [
    (lambda text: text.replace("!client\n", ""), "client"),  # a mapped folder the allow-list forgets
    (lambda text: text + "tritonize/gateway\n", "gateway"),  # the original bug: the image missed the gateway
], ids=["allow-list-forgets-client", "gateway-excluded"])
def test_a_folder_left_out_of_the_copy_fails_the_build(leave_out, named, tmp_path):
    text = (ROOT / ".dockerignore").read_text()
    changed = leave_out(text)
    assert changed != text
    workdir = copy_build_context(tmp_path / "rootfs", changed)
    assert not (workdir / named).exists() and not (workdir / "tritonize" / named).exists()
    r = build_wheel(workdir, tmp_path / "dist")
    assert r.returncode != 0 and named in r.stdout + r.stderr, r.stdout + r.stderr
    assert not list((tmp_path / "dist").glob("*.whl"))
