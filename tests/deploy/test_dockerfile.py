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


def test_base_images_are_pinned_and_triton_is_past_the_latest_bulletin():
    images = PARSER.parent_images
    assert len(images) == 2, images  # build stage, runtime stage
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "$" not in image, f"unpinned base image {image}"
    m = TRITON_IMAGE.match(images[-1])
    assert m, f"the runtime stage must be NVIDIA's Triton image, not {images[-1]}"
    assert (int(m[1]), int(m[2])) >= MIN_RELEASE


def test_every_copy_source_exists_and_travels_in_the_context():
    ignored = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    sources = []
    for value in all_of("COPY"):
        parts = [p for p in shlex.split(value) if not p.startswith("--")]
        if "--from=" in value:
            continue  # from another stage
        sources += parts[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY source {src} does not exist"
        top = src.rstrip("/").split("/")[0]
        assert not any(fnmatch.fnmatch(top, pattern) for pattern in ignored), f"COPY source {src} is excluded by .dockerignore"


def test_runs_as_a_non_root_user_with_a_healthcheck_on_readiness():
    users = [i["value"].strip() for i in runtime_stage() if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1] in ("triton-server", str(USER_ID))  # the uid the Kubernetes manifests run as
    (check,) = [i["value"] for i in runtime_stage() if i["instruction"] == "HEALTHCHECK"]
    assert f"127.0.0.1:{PORTS['health']}/v2/health/ready" in check  # the supervisor's readiness, not Triton's


def test_expose_matches_the_ports_the_entrypoint_serves_and_the_manifests_use():
    exposed = {int(p) for value in all_of("EXPOSE") for p in value.split()}
    argv = entrypoint()
    served = {int(options(argv)[f"--{n}-port"]) for n in PORTS}
    assert exposed == served == set(PORTS.values())


def test_entrypoint_serves_the_image_repository_on_the_images_triton():
    argv = entrypoint()
    assert argv[:2] == ["tritonize", "serve"]
    opts = options(argv)
    assert opts["--binary"] == "path" and opts["--host"] == "0.0.0.0"
    assert opts["--repository"] == REPOSITORY and opts["--engine-cache"] == ENGINE_CACHE
    assert 0 < int(opts["--http-max-input-size"]) < 64 << 20  # tighter than Triton's 64 MiB default
    copies = [i["value"] for i in runtime_stage() if i["instruction"] == "COPY"]
    assert any(c.split()[-1] == REPOSITORY for c in copies)


def test_runtime_stage_installs_only_the_runtime_extra():
    runs = " ".join(i["value"] for i in runtime_stage() if i["instruction"] == "RUN")
    extras = set(re.findall(r"\.whl\)\[([a-z,]+)\]", runs))
    assert extras == {"runtime"}


# -- the launcher side of the image's HTTP input limit --------------------------------------------------
def test_http_max_input_size_reaches_triton_only_when_set(tmp_path):
    server = TritonServer(ServerConfig(tmp_path, http_port=1, grpc_port=2, metrics_port=3, http_max_input_size=8 << 20))
    server.binary = TritonBinary(Path("/opt/tritonserver/bin/tritonserver"), kind="path")
    assert f"--http-max-input-size={8 << 20}" in server.command()
    server.config.http_max_input_size = None
    assert not any(a.startswith("--http-max-input-size") for a in server.command())


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
