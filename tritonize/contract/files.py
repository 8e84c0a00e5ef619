"""What lies in a served model's folder beside its config: the manifest of the conversion that wrote it
and, for the PyTorch engine, the stored checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

# <repository>/<model>/tritonize.json: the conversion's reuse key and report (and its pipeline),
# written last so that it marks a complete write.
MANIFEST = "tritonize.json"
# The folder, inside a model version, holding config.json, model.safetensors and tokenizer files.
WEIGHTS = "torch"


def read_manifest(repository: Path, name: str) -> dict | None:
    path = Path(repository) / name / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(repository: Path, name: str, manifest: dict) -> None:
    (Path(repository) / name / MANIFEST).write_text(json.dumps(manifest, indent=2))
