"""Transparent huge pages for the engines' weights, through glibc's malloc.

ONNX Runtime and PyTorch keep weights in malloc'd memory (all-MiniLM-L6-v2: ~90 MB in 4 KiB pages, far
more pages than the TLB holds), and most distributions ship THP as `madvise`, so nothing gets huge pages
unless the allocator asks. glibc >= 2.35 asks when `GLIBC_TUNABLES` holds `glibc.malloc.hugetlb=1`
(older glibc ignores the name). `benchmarks/investigations/huge_pages_bench.py`, two runs: ONNX Runtime MiniLM on one
thread in process took 0.88x and 0.91x the time per call at batch 1 x 16 tokens and 0.94x and 0.98x at
batch 8 x 24 (medians of 8 alternating process pairs); served, the step's compute per request on
embed-mix at one user was 0.96x and 0.95x (two servers per arm). Every stub inherits tritonserver's
environment, so setting it at launch covers them all. An operator's own `glibc.malloc.hugetlb` wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
HUGE_PAGES = f"{TUNABLE}=1"


def with_huge_pages(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with glibc's malloc asking for transparent huge pages, unless it already says either way."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if TUNABLE in tunables:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": ":".join(t for t in (tunables, HUGE_PAGES) if t)}


def reexec_with_huge_pages(module: str) -> None:
    """Restart this benchmark (`python -m module ...`) with the tunable, if it lacks it: glibc reads it
    only at start-up, and an in-process baseline must run on the allocator the served steps run on."""
    env = with_huge_pages(os.environ)
    if env.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
        os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
