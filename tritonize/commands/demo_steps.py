"""The demo's steps: each family's command module registers one when the CLI registers the family,
so `demo` runs whatever families the CLI has without importing them (no import circle)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class DemoStep:
    title: str
    convert: Callable[[Path], None] | None  # write the family's default model(s) into the repository (None: nothing to write)
    show: Callable[[object], None]  # call them on the running server (a TritonServer) and print what came back


STEPS: list[DemoStep] = []  # in the order the CLI registered the families


def add(step: DemoStep) -> None:
    if step not in STEPS:
        STEPS.append(step)
