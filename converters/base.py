"""The sequence every conversion runs, owned once (STYLE.md: Optimum's shape bases): check the name and
resolve the checkpoint (the family's constructor, before any work), fingerprint the source, options and
converter code, reuse a previous identical conversion, export, check parity against the reference users
compare with, write the repository entries and, last, the manifest that marks a complete write.

A family subclass states only what differs: its folder (whose code enters the reuse key), its report,
its parity tolerance (a class attribute; an entry point may pass its own), the options that enter the
key, and the export, parity and write steps.
"""

from __future__ import annotations

import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, TypeVar

from tritonize.contract.files import read_manifest, write_manifest
from tritonize.converters.checkpoints import fingerprint

R = TypeVar("R")


class ParityError(RuntimeError):
    """The exported (or stored) model's outputs differ from the reference by more than the tolerance."""


def manifest(key: str, report: Any, **extra: Any) -> dict:
    """A conversion's manifest: its reuse key, its report (without `reused`) and what the family adds."""
    return {"key": key, "report": {k: v for k, v in asdict(report).items() if k != "reused"}, **extra}


class Conversion(ABC, Generic[R]):
    family: ClassVar[str]  # converters/<family>/: its code enters the reuse key
    report_type: ClassVar[Callable[..., Any]]  # the report dataclass; a reused conversion's has reused=True
    tolerance: ClassVar[float]  # max parity error allowed (in the family's units)
    reuse_reason: ClassVar[str] = "same source and options"

    def __init__(self, name: str, source: str, repository: Path, force: bool = False, log: Callable[[str], None] = print,
                 tolerance: float | None = None):
        self.started = time.monotonic()
        self.name, self.source, self.repository = name, source, Path(repository)
        self.force, self.log = force, log
        if tolerance is not None:
            self.tolerance = tolerance

    @abstractmethod
    def options(self) -> dict:
        """What enters the reuse key besides the source and the converter code."""

    @abstractmethod
    def export(self, tmp: Path) -> None:
        """Load the checkpoint and export what the served steps run (into `tmp`, removed afterwards)."""

    @abstractmethod
    def parity(self) -> None:
        """Check the export against the reference; log the error and raise ParityError over the tolerance."""

    @abstractmethod
    def report(self) -> R:
        """The conversion's report (a dataclass with `reused`), stored in the manifest."""

    @abstractmethod
    def write(self, report: R) -> dict:
        """Write the repository entries; returns what the manifest holds beside the key and the report."""

    @abstractmethod
    def written(self, report: R) -> str:
        """The closing log line."""

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def run(self) -> R:
        key = fingerprint(self.source, self.options(), self.family)
        previous = read_manifest(self.repository, self.name)
        if previous and previous.get("key") == key and not self.force:
            self.log(f"{self.name}: reusing {self.repository / self.name} ({self.reuse_reason})")
            return self.report_type(**previous["report"], reused=True)
        with tempfile.TemporaryDirectory(prefix=f"tritonize-{self.family}-") as tmp:
            self.export(Path(tmp))
            self.parity()
            report = self.report()
            extra = self.write(report)
            write_manifest(self.repository, self.name, manifest(key, report, **extra))
        self.log(self.written(report))
        return report
