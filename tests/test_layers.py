"""The import layers of the package, as a contract: a module imports only from its own layer or the layers below.

    cli  ->  server  ->  inference  ->  model, priors, training, evaluation  ->  io, preprocessing, vocabulary
                                                                                  (and config, registry, weights)

``from organsam import __version__`` is allowed anywhere (the version is a fact of the package, not a layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "organsam"

LAYERS: dict[str, int] = {
    "io": 0,
    "preprocessing": 0,
    "vocabulary": 0,
    "config": 0,
    "registry": 0,
    "weights": 0,
    "model": 1,
    "priors": 1,
    "training": 1,
    "evaluation": 1,
    "inference": 2,
    "server": 3,
    "cli": 4,
}


def _imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported organsam module, names) of every organsam import in a file (also inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "organsam":
            out.append((node.lineno, node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, ()) for a in node.names if a.name.split(".")[0] == "organsam"]
    return out


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    assert parts == set(LAYERS), "give a new part of the package its layer in LAYERS (and the module docstring)"


def test_modules_import_only_their_own_layer_or_lower() -> None:
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue  # the public API: ``organsam.segment`` and friends
        part = rel.parts[0].removesuffix(".py")
        for line, module, names in _imports(path):
            if module == "organsam":
                if set(names) <= {"__version__"}:
                    continue
                broken.append(f"{rel}:{line} imports the package's top level ({', '.join(names)})")
                continue
            target = module.split(".")[1]
            if LAYERS[target] > LAYERS[part]:
                broken.append(f"{rel}:{line} ({part}, layer {LAYERS[part]}) imports {module} (layer {LAYERS[target]})")
    assert not broken, "\n".join(broken)
