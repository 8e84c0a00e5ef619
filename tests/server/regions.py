"""/dev/shm checks for the tests that stop servers: no region of any stub a server ever started survives
its stop, and nothing else is removed (other servers share the host, so those are compared by name)."""

from __future__ import annotations

from pathlib import Path

from tritonize.server import TritonServer
from tritonize.server.stubs import REGION_PREFIX


def shm_regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(REGION_PREFIX + "*")}


def assert_only_its_regions_removed(server: TritonServer, before: set[str], foreign: str) -> None:
    """After `server.stop()`: every region its stubs ever held is gone, the stop removed only those (none
    of them existed before the server started), and the foreign one is still there."""
    ours = server.shm_regions
    assert ours, "no stub region was recorded"
    assert not (ours & before), "a region recorded for this server existed before it started"
    left = ours & shm_regions()
    assert not left, f"shared-memory region(s) of this server's stubs outlived it: {sorted(left)}"
    assert set(server.removed_regions) <= ours, f"the stop removed regions not its own: {server.removed_regions}"
    assert foreign in shm_regions(), "the stop removed a region no stub of this server held"
