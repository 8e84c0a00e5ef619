"""The Dockerfile, checked where Docker cannot run: statically (dockerfile-parse), and by running the image's
own entrypoint command line against the embedded server."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tritonize.deploy.kubernetes import ENGINE_CACHE, PORTS, REPOSITORY, USER_ID
from tritonize.server import ServerConfig, ServerStartError, TritonServer
from tritonize.server.binary import TritonBinary
from tritonize.server.launcher import free_ports
from tests.conftest import CLASSIFIER

ROOT = Path(__file__).resolve().parents[2]
PARSER = DockerfileParser(path=str(ROOT / "Dockerfile"))
INSTRUCTIONS = PARSER.structure
TRITON_IMAGE = re.compile(r"^nvcr\.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3$")
# NVIDIA's latest Triton bulletin when the image was pinned (2026-08-18) is fixed in 26.06.
MIN_RELEASE = (26, 6)


def all_of(name: str) -> list[str]:
    return [i["value"] for i in INSTRUCTIONS if i["instruction"] == name]


def runtime_stage() -> list[dict]:
    froms = [n for n, i in enumerate(INSTRUCTIONS) if i["instruction"] == "FROM"]
    return INSTRUCTIONS[froms[-1]:]


def entrypoint() -> list[str]:
    (value,) = [i["value"] for i in runtime_stage() if i["instruction"] == "ENTRYPOINT"]
    return json.loads(value)  # exec form: no shell between Docker and tritonize


def options(argv: list[str]) -> dict[str, str]:
    return dict(zip(argv[2::2], argv[3::2]))


@pytest.mark.unit  # static: no server, no conversion
def test_base_images_are_pinned_and_triton_is_past_the_latest_bulletin():
    images = PARSER.parent_images
    assert len(images) == 2, images  # build stage, runtime stage
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "$" not in image, f"unpinned base image {image}"
    m = TRITON_IMAGE.match(images[-1])
    assert m, f"the runtime stage must be NVIDIA's Triton image, not {images[-1]}"
    assert (int(m[1]), int(m[2])) >= MIN_RELEASE


# -- the build context: .dockerignore, as Docker reads it -------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern:
    """One .dockerignore pattern as Docker compiles it (moby's patternmatcher): `*` and `?` never cross a `/`,
    `**` crosses any number of folders (`**/` none too), `[...]` is a class, `\\` escapes; anchored at the root."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unterminated class in .dockerignore pattern {pattern!r}")
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]"
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(f"^{out}$")


def _lines(text: str) -> list[tuple[bool, str]]:
    """(re-include?, pattern) per line, in order: comments and blanks skipped, `!` re-includes, paths cleaned
    and a leading `/` dropped, as Docker does."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        line = line[1:].strip() if include else line
        line = os.path.normpath(line).lstrip("/") if line not in ("", "/") else line
        if line:
            out.append((include, line))
    return out


def dockerignore(text: str) -> list[tuple[bool, re.Pattern]]:
    return [(include, _pattern_regex(pattern)) for include, pattern in _lines(text)]


def excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's decision for one context path: the last line that matches it, or one of its parent folders, wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    out = False
    for include, regex in rules:
        if any(regex.match(c) for c in candidates):
            out = not include
    return out


def context_files(root: Path, ignore_text: str | None = None) -> list[str]:
    """Every path (files and links, relative, with `/`) that `docker build root` sends. An excluded folder is
    entered only when a `!` line could re-include something below it (the decision stays per path)."""
    text = (root / ".dockerignore").read_text() if ignore_text is None else ignore_text
    rules = dockerignore(text)
    reincludes = [pattern for include, pattern in _lines(text) if include]

    def may_reinclude(folder: str) -> bool:
        return any(any(c in p for c in "*?[\\") or p.startswith(folder + "/") for p in reincludes)

    out = []
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        keep = []
        for d in dirs:
            path = prefix + d
            if (Path(here) / d).is_symlink():
                files.append(d)  # sent as a link, as Docker sends it
            elif not excluded(path, rules) or may_reinclude(path):
                keep.append(d)
        dirs[:] = keep
        out += [prefix + f for f in files if not excluded(prefix + f, rules)]
    return sorted(out)


def build_stage() -> list[dict]:
    froms = [n for n, i in enumerate(INSTRUCTIONS) if i["instruction"] == "FROM"]
    return INSTRUCTIONS[froms[0]:froms[1]]


def context_copies(stage: list[dict]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from another stage)."""
    out = []
    for i in stage:
        if i["instruction"] == "COPY" and "--from=" not in i["value"]:
            parts = [p for p in shlex.split(i["value"]) if not p.startswith("--")]
            out.append((parts[:-1], parts[-1]))
    return out


@pytest.mark.unit  # static: no server, no conversion
def test_dockerignore_reads_as_docker_reads_it():
    rules = dockerignore("# c\n*\n!tritonize\n**/__pycache__\n**/*.py[cod]\n!/keep.txt\nsub/**\n!sub/a/**/x?.py\n")
    assert excluded("anything", rules) and excluded(".venv/lib/x.py", rules) and excluded("tests/conftest.py", rules)
    assert not excluded("tritonize", rules) and not excluded("tritonize/runtime/triton.py", rules)
    assert excluded("tritonize/__pycache__/cli.cpython-311.pyc", rules) and excluded("__pycache__", rules)
    assert excluded("tritonize/runtime/__pycache__", rules) and excluded("tritonize/x.pyc", rules)
    assert not excluded("keep.txt", rules)
    assert excluded("sub/a/b.py", rules) and not excluded("sub/a/x1.py", rules) and not excluded("sub/a/b/c/x2.py", rules)
    assert excluded("sub/a/b/c/x22.py", rules)  # ? is one character
    last_wins = dockerignore("!client\nclient\n")
    assert excluded("client/x.py", last_wins)


@pytest.mark.unit  # static: no server, no conversion
def test_the_build_stage_copies_the_context_once_and_dockerignore_decides_what_travels():
    copies = context_copies(build_stage())
    assert [src for src, _ in copies] == [["."]], f"one `COPY . .` in the build stage, not {copies}"
    sent = context_files(ROOT)
    tops = {p.split("/")[0] for p in sent}
    # What the wheel is built from: pyproject.toml, the readme it names, the constraints pip installs with, and
    # every folder pyproject maps into the namespace (tritonize/ holds all but converters/ and client/).
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = pyproject["tool"]["setuptools"]["package-dir"]
    folders = set(package_dir.values())
    assert {"pyproject.toml", "constraints.txt", pyproject["project"]["readme"]} | folders <= tops
    for folder in folders:
        source = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
        assert source and source <= set(sent), f"{folder}/ does not travel whole: {sorted(source - set(sent))[:5]}"
    for package, data in pyproject["tool"]["setuptools"]["package-data"].items():
        mapped = max((k for k in package_dir if package == k or package.startswith(k + ".")), key=len)
        folder = "/".join([package_dir[mapped], *package[len(mapped):].split(".")[1:]])
        for pattern in data:
            assert any(fnmatch.fnmatch(p, f"{folder}/{pattern}") for p in sent), f"package data {folder}/{pattern} does not travel"
    # ... and nothing else: no venv, no git, no tests, no built models, no byte code.
    assert tops <= {"pyproject.toml", "constraints.txt", "README.md"} | folders, tops
    assert not any("__pycache__" in p or p.endswith((".pyc", ".onnx", ".safetensors")) or ".egg-info" in p for p in sent)


@pytest.mark.unit  # static: no server, no conversion
def test_every_context_copy_source_exists_and_travels():
    sent = set(context_files(ROOT))
    copies = [src for stage in (build_stage(), runtime_stage()) for srcs, _ in context_copies(stage) for src in srcs]
    assert copies
    for src in copies:
        assert (ROOT / src).exists(), f"COPY source {src} does not exist"
        if src.strip("/") not in (".", ""):
            top = src.strip("/")
            assert top in sent or any(p.startswith(top + "/") for p in sent), f"COPY source {src} is excluded by .dockerignore"


@pytest.mark.unit  # static: no server, no conversion
def test_runs_as_a_non_root_user_with_a_healthcheck_on_readiness():
    users = [i["value"].strip() for i in runtime_stage() if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1] in ("triton-server", str(USER_ID))  # the uid the Kubernetes manifests run as
    (check,) = [i["value"] for i in runtime_stage() if i["instruction"] == "HEALTHCHECK"]
    assert f"127.0.0.1:{PORTS['health']}/v2/health/ready" in check  # the supervisor's readiness, not Triton's


def header_commands() -> list[list[str]]:
    """The command lines the Dockerfile's header documents (`\\` continues a line), split as a shell would."""
    lines, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            continue
        text = line[1:].strip()
        current = f"{current} {text}" if current else text
        if current.endswith("\\"):
            current = current[:-1]
        else:
            lines.append(current)
            current = ""
    return [shlex.split(line, comments=True) for line in lines if line.startswith("docker ")]


def gateway_command() -> list[str]:
    """The image's second entrypoint, as the header runs it: `docker run ... --entrypoint tritonize IMAGE gateway ...`,
    from IMAGE on."""
    (argv,) = [a for a in header_commands() if "--entrypoint" in a and a[a.index("--entrypoint") + 1] == "tritonize"]
    return argv[argv.index("--entrypoint") + 2:]


def gateway_port() -> int:
    return int(options(gateway_command())["--port"])


@pytest.mark.unit  # static: no server, no conversion
def test_expose_matches_the_ports_the_entrypoint_serves_and_the_manifests_use():
    exposed = {int(p) for value in all_of("EXPOSE") for p in value.split()}
    argv = entrypoint()
    served = {int(options(argv)[f"--{n}-port"]) for n in PORTS}
    # PORTS is what the manifests' pods serve: the entrypoint's (`tritonize serve`) four ports. The gateway's
    # port is exposed too, for the image's second entrypoint, but stays out of PORTS: the Kubernetes pod runs
    # only `serve`, so a named containerPort/Service port for it would point at nothing (and
    # tests/deploy/test_kubernetes.py equates the pod's and the Service's ports with PORTS).
    assert served == set(PORTS.values())
    assert exposed == served | {gateway_port()}
    assert gateway_port() not in served


@pytest.mark.unit  # static: no server, no conversion
def test_the_gateway_is_a_documented_second_entrypoint_of_the_image():
    import inspect

    from tritonize.commands.gateway import gateway

    argv = gateway_command()
    assert argv[:2] == ["tritonize", "gateway"]  # the tag the header builds, then the command
    opts = options(argv)
    # It reaches the server's gRPC port (same network namespace), binds beyond loopback, and so takes API keys.
    assert opts["--url"] == f"127.0.0.1:{PORTS['grpc']}" and opts["--host"] == "0.0.0.0" and opts["--api-key-file"]
    known = {f"--{n.replace('_', '-')}" for n in inspect.signature(gateway).parameters}
    assert set(opts) <= known, set(opts) - known
    serving = [a for a in header_commands() if a[:2] == ["docker", "run"] and "--entrypoint" not in a]
    assert any(f"{gateway_port()}:{gateway_port()}" in a for a in serving)  # published where the gateway shares the network


@pytest.mark.unit  # static: no server, no conversion
def test_entrypoint_serves_the_image_repository_on_the_images_triton():
    argv = entrypoint()
    assert argv[:2] == ["tritonize", "serve"]
    opts = options(argv)
    assert opts["--binary"] == "path" and opts["--host"] == "0.0.0.0"
    assert opts["--repository"] == REPOSITORY and opts["--engine-cache"] == ENGINE_CACHE
    assert 0 < int(opts["--http-max-input-size"]) < 64 << 20  # tighter than Triton's 64 MiB default
    copies = [i["value"] for i in runtime_stage() if i["instruction"] == "COPY"]
    assert any(c.split()[-1] == REPOSITORY for c in copies)


@pytest.mark.unit  # static: no server, no conversion
def test_runtime_stage_installs_only_the_runtime_and_gateway_extras():
    runs = " ".join(i["value"] for i in runtime_stage() if i["instruction"] == "RUN")
    (extras,) = re.findall(r"\.whl\)\[([a-z,]+)\]", runs)
    assert sorted(extras.split(",")) == ["gateway", "runtime"]  # no torch: tests/deploy/test_image_stages.py runs it so


# -- the launcher side of the image's HTTP input limit --------------------------------------------------
@pytest.mark.unit  # static: no server, no conversion
def test_http_max_input_size_reaches_triton_only_when_set(tmp_path):
    server = TritonServer(ServerConfig(tmp_path, http_port=1, grpc_port=2, metrics_port=3, http_max_input_size=8 << 20))
    server.binary = TritonBinary(Path("/opt/tritonserver/bin/tritonserver"), kind="path")
    assert f"--http-max-input-size={8 << 20}" in server.command()
    server.config.http_max_input_size = None
    assert not any(a.startswith("--http-max-input-size") for a in server.command())


@pytest.mark.unit  # static: no server, no conversion
def test_the_embedded_binary_refuses_the_limit_clearly(tmp_path):
    with pytest.raises(ServerStartError, match="needs tritonserver >= 2.59"):
        TritonServer(ServerConfig(tmp_path, http_port=0, grpc_port=0, metrics_port=0, http_max_input_size=1 << 20,
                                  binary="embedded")).start()


# -- the entrypoint itself, on the embedded server --------------------------------------------------------
def local_command(argv: list[str], repository: Path, cache: Path, ports: dict[str, int]) -> list[str]:
    """The image's command with only what must differ here replaced: the binary (no NGC image here), the
    bind address (loopback: the embedded 2.51 is for loopback only), the repository path, free ports, the
    engine cache; and without --http-max-input-size, which the embedded 2.51 does not know (the two tests
    above check how the launcher passes and refuses it). Every other option runs as the image runs it."""
    replace = {"--binary": "embedded", "--host": "127.0.0.1", "--repository": str(repository), "--engine-cache": str(cache),
               **{f"--{n}-port": str(p) for n, p in ports.items()}}
    out = [str(Path(sys.executable).with_name(argv[0])), argv[1]]
    rest = argv[2:]
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag == "--http-max-input-size":
            continue
        out += [flag, replace.get(flag, value)]
    return out


def test_the_image_entrypoint_serves_a_repository_and_answers(built, tmp_path):
    from tritonize.planner.systems import Variant, write_variant
    from tritonize.client import Client

    repo = write_variant(built["repository"], CLASSIFIER, Variant(), tmp_path / "repo")  # one small pipeline
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    command = local_command(entrypoint(), repo, tmp_path / "engines", ports)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        deadline, preds = time.monotonic() + 180, None
        while preds is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with Client(f"127.0.0.1:{ports['grpc']}") as c:
                    preds = c.classify(["the server stays ready", "a tiny model"], model=CLASSIFIER)
            except Exception:
                time.sleep(0.5)
        assert preds is not None, f"no answer from {shlex.join(command)} (exit code {proc.poll()})"
        assert len(preds) == 2 and all(p.label in ("negative", "neutral", "positive") and 0 < p.score <= 1 for p in preds)
        # What the HEALTHCHECK and the Kubernetes probes ask (the endpoint starts just after Triton is ready).
        health = f"http://127.0.0.1:{ports['health']}/v2/health/ready"
        for _ in range(100):
            try:
                with urllib.request.urlopen(health, timeout=5) as r:
                    assert r.status == 200
                    break
            except urllib.error.URLError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"{health} never answered")
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "tritonserver stopped" in out
