"""A step of `tritonize demo`: each family's command module defines one (named by `tritonize.families`),
and the load test defines the last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class DemoStep:
    title: str
    convert: Callable[[Path], None] | None  # write the family's default model(s) into the repository (None: nothing to write)
    show: Callable[[object], None]  # call them on the running server (a TritonServer) and print what came back
