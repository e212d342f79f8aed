"""Design registry: name -> (config dataclass, builder). Importable without torch.

Designs register themselves with ``@register_design(name, config_cls)`` in their module under
``organsam/model/designs``; ``list_designs()`` names them without importing torch, and
``build_design(name, overrides)`` resolves the YAML preset plus overrides and builds the model.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from organsam.config import apply_overrides, from_dict, preset

__all__ = ["register_design", "list_designs", "get_design", "build_design", "resolve_config", "DESIGN_MODULES"]

# Known designs and the module that registers each (so listing needs no torch import).
DESIGN_MODULES: dict[str, str] = {
    "crisp_sam2": "organsam.model.designs.crisp_sam2",
    "seg_sam": "organsam.model.designs.seg_sam",
    "pg_sam": "organsam.model.designs.pg_sam",
    "organsam": "organsam.model.designs.organsam",
    "organ_prompts": "organsam.model.designs.organ_prompts",
}


@dataclass(frozen=True)
class DesignEntry:
    name: str
    config_cls: type
    builder: Callable[[Any], Any]
    summary: str


_REGISTRY: dict[str, DesignEntry] = {}


def register_design(name: str, config_cls: type, summary: str = "") -> Callable[[Callable], Callable]:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name``."""

    def deco(builder: Callable) -> Callable:
        _REGISTRY[name] = DesignEntry(name, config_cls, builder, summary or (builder.__doc__ or "").strip())
        return builder

    return deco


def list_designs() -> list[str]:
    """Names of all designs (no torch import)."""
    return sorted(DESIGN_MODULES)


def get_design(name: str) -> DesignEntry:
    """The registry entry of ``name`` (imports its module).

    Raises:
        KeyError: unknown name, with a did-you-mean suggestion.
    """
    if name not in DESIGN_MODULES:
        close = difflib.get_close_matches(name, DESIGN_MODULES, n=2)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown design {name!r}{hint} (known: {', '.join(list_designs())})")
    if name not in _REGISTRY:
        importlib.import_module(DESIGN_MODULES[name])
    return _REGISTRY[name]


def resolve_config(name: str, overrides: Iterable[str | Mapping[str, Any]] = ()) -> Any:
    """Preset YAML of ``name`` merged with ``overrides`` -> the design's config dataclass."""
    entry = get_design(name)
    data = apply_overrides(preset(name), overrides)
    return from_dict(entry.config_cls, data, where=f"design {name}")


def build_design(name: str, overrides: Iterable[str | Mapping[str, Any]] = (), config: Any = None) -> Any:
    """Build design ``name`` from its preset + overrides (or a ready ``config``)."""
    entry = get_design(name)
    cfg = config if config is not None else resolve_config(name, overrides)
    return entry.builder(cfg)
