"""The Python-backend stub processes of a running tritonserver, read from /proc (Linux, like Triton).

Triton 2.51 neither restarts a stub that dies nor lets its readiness say so, so the supervisor watches
the stubs itself: each is a child of the server whose command line names its model's `model.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str  # the Triton model this stub serves (one stub per model instance)
    instance: str  # e.g. minilm_model_0_0
    shm_region: str  # its shared-memory region in /dev/shm, which Triton removes only on a clean exit


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def stubs_of(server_pid: int) -> list[Stub]:
    """The live stubs whose parent is the server."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != server_pid or stat[0] == "Z":
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(argv) < 3 or not argv[0].decode(errors="replace").endswith(STUB_NAME):
            continue
        model_py = Path(argv[1].decode(errors="replace"))  # <repository>/<model>/<version>/model.py
        instance = next((a.decode() for a in argv if a.startswith(model_py.parent.parent.name.encode() + b"_")), "")
        found.append(Stub(int(entry.name), model_py.parent.parent.name, instance, argv[2].decode(errors="replace")))
    return found


def alive(pid: int) -> bool:
    """A zombie is dead: the stub exited and Triton has not reaped it (it may never)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def remove_shm_regions(names: set[str]) -> list[str]:
    """Unlink the named regions that still exist (after the server was killed); returns those removed."""
    removed = []
    for name in names:
        path = Path("/dev/shm") / Path(name).name
        if path.name.startswith("triton_python_backend_shm_region_") and path.exists():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
