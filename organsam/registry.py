"""Design registry: name -> (config dataclass, builder). Importable without torch.

A design is one module ``organsam/model/designs/<name>.py`` whose builder carries
``@register_design("<name>", ConfigClass)``; its docstring's first line is its summary. Nothing else lists it:
``list_designs()`` names the modules found there without importing them (no torch), ``get_design(name)`` imports
the one asked for, and ``build_design(name, overrides)`` resolves its YAML preset plus overrides and builds it.
"""

from __future__ import annotations

import ast
import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from organsam.config import apply_overrides, from_dict, preset

__all__ = [
    "register_design",
    "list_designs",
    "get_design",
    "build_design",
    "resolve_config",
    "design_source",
    "design_summary",
    "DESIGNS_DIR",
]

#: Designs saved or configured under a former name -> their name now (``organsam`` was the research design now called
#: ``unified``); checkpoints and training states load under the new name, configs are told to change.
RENAMED_DESIGNS: dict[str, str] = {"organsam": "unified"}

#: The folder of the design modules, one per design, named after it.
DESIGNS_DIR: Path = Path(__file__).resolve().parent / "model" / "designs"


@dataclass(frozen=True)
class DesignEntry:
    name: str
    config_cls: type
    builder: Callable[[Any], Any]


_REGISTRY: dict[str, DesignEntry] = {}


def register_design(name: str, config_cls: type) -> Callable[[Callable], Callable]:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name`` (the name of its module)."""

    def deco(builder: Callable) -> Callable:
        _REGISTRY[name] = DesignEntry(name, config_cls, builder)
        return builder

    return deco


def list_designs() -> list[str]:
    """Names of all designs: the modules of :data:`DESIGNS_DIR` (nothing imported, no torch)."""
    return sorted(p.stem for p in DESIGNS_DIR.glob("*.py") if not p.name.startswith("_"))


def design_source(name: str) -> Path:
    """The module file of design ``name``."""
    return DESIGNS_DIR / f"{name}.py"


def design_summary(name: str) -> str:
    """The first line of a design module's docstring, read from its source (nothing imported: no torch)."""
    doc = ast.get_docstring(ast.parse(design_source(name).read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def get_design(name: str) -> DesignEntry:
    """The registry entry of ``name`` (imports its module).

    Raises:
        KeyError: unknown name, with a did-you-mean suggestion.
    """
    known = list_designs()
    if name in RENAMED_DESIGNS:
        raise KeyError(f"design {name!r} was renamed {RENAMED_DESIGNS[name]!r}; use that name")
    if name not in known:
        close = difflib.get_close_matches(name, known, n=2)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown design {name!r}{hint} (known: {', '.join(known)})")
    if name not in _REGISTRY:
        importlib.import_module(f"organsam.model.designs.{name}")
    if name not in _REGISTRY:
        raise KeyError(
            f"{design_source(name)} registers no design {name!r}: decorate its builder with "
            f"@register_design({name!r}, ConfigClass)"
        )
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
