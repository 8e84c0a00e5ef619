"""Where the `tritonserver` binary comes from and what it needs to run.

Embedded default: the binary inside the `nvidia-pytriton` wheel (Python backend only, CPU). It has no
Python-backend stub next to its `libtriton_python.so`, so we lay out a backend directory of our own
(in a cache folder, never inside site-packages) with the stub built for the running interpreter.
Otherwise: a `tritonserver` on PATH, as in the NGC container, which brings its own backends.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TritonBinary:
    executable: Path
    backend_directory: Path | None = None
    cache_directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    kind: str = "embedded"

    def args(self) -> list[str]:
        args = [str(self.executable)]
        if self.backend_directory:
            args.append(f"--backend-directory={self.backend_directory}")
        if self.cache_directory:
            args.append(f"--cache-directory={self.cache_directory}")
        return args


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _cache_home() -> Path:
    return Path(os.environ.get("TRITONIZE_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tritonize"))


def embedded_binary() -> TritonBinary:
    root = _pytriton_root()
    if root is None:
        raise FileNotFoundError("the embedded Triton server needs the nvidia-pytriton wheel: pip install 'tritonize[serve]'")
    triton = root / "tritonserver"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.exists():
        raise FileNotFoundError(f"nvidia-pytriton has no Python backend stub for Python {py} ({stub})")

    # A private backend dir: libtriton_python.so finds its stub beside itself.
    backend_root = _cache_home() / f"backends-py{py}-{_fingerprint(triton / 'backends/python/libtriton_python.so', stub)}"
    python_dir = backend_root / "python"
    if not (python_dir / "triton_python_backend_stub").exists():
        tmp = backend_root.with_name(backend_root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "python").mkdir(parents=True)
        for f in (triton / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / "python" / f.name)
        shutil.copy2(stub, tmp / "python" / stub.name)
        try:
            tmp.rename(backend_root)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)

    libs = [str(root.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    old_ld = os.environ.get("LD_LIBRARY_PATH")
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join([p for p in libs if p] + ([old_ld] if old_ld else [])),
        # The stub finds its site-packages (and so `runtime`) through the interpreter first on PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    return TritonBinary(triton / "bin" / "tritonserver", backend_root, triton / "caches", env, "embedded")


def path_binary() -> TritonBinary:
    exe = shutil.which("tritonserver")
    if exe is None:
        raise FileNotFoundError("no tritonserver on PATH")
    return TritonBinary(Path(exe), kind="path")


def find_binary(kind: str = "auto") -> TritonBinary:
    """`embedded`, `path`, or `auto` (the embedded one when installed, else PATH)."""
    if kind == "embedded":
        return embedded_binary()
    if kind == "path":
        return path_binary()
    if kind != "auto":
        raise ValueError(f"binary must be auto, embedded or path, not {kind!r}")
    try:
        return embedded_binary()
    except FileNotFoundError:
        return path_binary()


def _fingerprint(*files: Path) -> str:
    return "-".join(f"{f.stat().st_size:x}{int(f.stat().st_mtime):x}" for f in files)
