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
    # Its shared-memory region in /dev/shm (argv[2], a fresh UUID name per stub launched: Triton 2.51 neither
    # reuses a name nor restarts a stub itself). Triton removes it when the instance ends cleanly; not when
    # the stub died with a request inside (the instance is then kept until the server is killed at stop).
    shm_region: str


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


REGION_PREFIX = "triton_python_backend_shm_region_"


def regions_in_use(names: set[str]) -> set[str]:
    """Those of the named regions that some process still holds: a live stub whose command line names it
    (any server's on this host) or any process that maps it (where its /proc/PID/maps is readable)."""
    names = {Path(n).name for n in names}
    used: set[str] = set()
    if not names:
        return used
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if len(argv) >= 3 and argv[0].endswith(STUB_NAME.encode()) and alive(int(entry.name)):
                used |= names & {Path(argv[2].decode(errors="replace")).name}
            maps = (entry / "maps").read_text(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        used |= {n for n in names - used if f"/dev/shm/{n}" in maps}
    return used


def remove_shm_regions(names: set[str]) -> list[str]:
    """Unlink the named Python-backend regions that still exist and that no process holds (see
    `regions_in_use`); returns those removed. Call it with the regions of one server's own stubs only,
    after that server is gone: Triton removes a region itself only when its instance ends cleanly."""
    candidates = {Path(n).name for n in names if Path(n).name.startswith(REGION_PREFIX)}
    candidates = {n for n in candidates if (Path("/dev/shm") / n).exists()}
    removed = []
    for name in sorted(candidates - regions_in_use(candidates)):
        try:
            (Path("/dev/shm") / name).unlink()
        except FileNotFoundError:  # removed meanwhile
            continue
        removed.append(name)
    return removed
