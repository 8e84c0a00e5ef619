"""The one encoding of config parameters: Triton stores every parameter as a string, so each field is
written and read by its annotated type (str as is, bool as true/false, numbers with str(), None as "",
lists, dicts and nested dataclasses as JSON)."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T", bound="Parameters")


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.dumps(dataclasses.asdict(value))
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _decode(name: str, text: str, kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(kind):  # Optional[X]: "" is None
        return None if text == "" else _decode(name, text, args[0])
    origin = typing.get_origin(kind) or kind
    try:
        if origin is bool:
            return text.lower() in ("1", "true", "yes")
        if origin in (int, float, str):
            return origin(text)
        value = json.loads(text)
        if dataclasses.is_dataclass(origin):
            return origin(**value)
        return tuple(value) if origin is tuple else value
    except (TypeError, ValueError) as e:
        raise ValueError(f"parameter {name} must be {getattr(origin, '__name__', origin)}, got {text!r}") from e


class Parameters:
    """A frozen dataclass of config parameters; subclasses validate in `__post_init__`."""

    def to_params(self) -> dict[str, str]:
        """The writer: every field, as config.pbtxt holds it."""
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_params(cls: type[T], p: Mapping[str, str]) -> T:
        """The reader: the fields present in `p` (a config's parameters); the others take their default."""
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return cls(**{f.name: _decode(f.name, p[f.name], hints[f.name]) for f in fields if f.name in p})


def at_least(owner: object, minimum: float, *names: str) -> None:
    """Each named field of `owner` must be >= minimum; the error names the field and the limit."""
    for name in names:
        value = getattr(owner, name)
        if not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
