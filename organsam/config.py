"""Typed configuration: dataclass schemas, YAML presets, ``key=value`` overrides.

Every design has a config dataclass registered with it (see ``organsam.registry``). Presets live in
``organsam/configs/<design>.yaml``; a user file or CLI overrides are merged on top, and the resolved
config is stored with every checkpoint.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

__all__ = ["from_dict", "to_dict", "load_yaml", "preset", "apply_overrides", "ConfigError"]


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses.

    Raises:
        ConfigError: for unknown keys (with the valid ones listed).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} for {cls.__name__}; valid: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype) and isinstance(value, Mapping):
            value = from_dict(ftype, value, f"{where}.{key}")
        elif typing.get_origin(ftype) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)  # type: ignore[return-value]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def preset(design: str) -> dict[str, Any]:
    """The packaged YAML preset of a design (``organsam/configs/<design>.yaml``), or ``{}``."""
    f = resources.files("organsam") / "configs" / f"{design}.yaml"
    if not f.is_file():
        return {}
    return yaml.safe_load(f.read_text()) or {}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict[str, Any], overrides: Iterable[str | Mapping[str, Any]]) -> dict[str, Any]:
    """Merge mappings and ``a.b=value`` strings (values parsed as YAML scalars) onto ``data``."""
    out = dict(data)
    for item in overrides:
        if isinstance(item, Mapping):
            out = _merge(out, item)
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. decoder.depth=2)")
        key, raw = item.split("=", 1)
        node: Any = yaml.safe_load(raw)
        for part in reversed(key.strip().split(".")):
            node = {part: node}
        out = _merge(out, node)
    return out
