"""The atlas file format: a labelled volume as one compact ``.npz`` (the location model text prompts are placed
with; :meth:`organsam.priors.atlas.Atlas.save` / :meth:`~organsam.priors.atlas.Atlas.load`).

Read with ``allow_pickle=False``. Arrays:

- ``image``: (Z, Y, X) int16 HU in the canonical layout (lossless for CTs stored as whole HU);
- ``labels``: (Z, Y, X) uint8/uint16 compact label map, value ``i + 1`` = ``organs[i]``;
- ``spacing``: (sz, sy, sx) mm; ``organs``: vocabulary organ ids; ``meta``: JSON (format, name, modality,
  source, licence, the command that built it, organsam version).

``organsam atlas build`` writes one from a labelled volume; ``scripts/build_atlas.sh`` rebuilds the one shipped
in the package (``organsam/assets/atlas_ts_a.npz``, from the Apache-2.0 TotalSegmentator example CT; attribution
in ``NOTICE``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from organsam import __version__
from organsam.io.files import atomic_path

__all__ = ["ATLAS_FORMAT", "AtlasArrays", "AtlasFileError", "read_atlas_file", "write_atlas_file"]

ATLAS_FORMAT = "organsam-atlas-v1"


class AtlasFileError(ValueError):
    """A file is not a readable organsam atlas; the message names the file and the fix."""


@dataclass(frozen=True)
class AtlasArrays:
    """The content of an atlas file."""

    image: np.ndarray
    labels: np.ndarray
    organs: list[str]
    spacing: tuple[float, float, float]
    meta: dict[str, Any]


def write_atlas_file(path: str | os.PathLike[str], content: AtlasArrays) -> Path:
    """Write an atlas file atomically (``meta`` gets the format and the organsam version)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise AtlasFileError(f"{path}: an atlas file must end in .npz")
    image = np.rint(content.image)
    lo, hi = float(image.min(initial=0)), float(image.max(initial=0))
    if lo < np.iinfo(np.int16).min or hi > np.iinfo(np.int16).max:
        raise AtlasFileError(f"{path}: intensities {lo:g}..{hi:g} do not fit int16 (an atlas holds CT HU)")
    meta = {**content.meta, "format": ATLAS_FORMAT, "organsam_version": __version__}
    with atomic_path(path, suffix=".tmp.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            image=image.astype(np.int16),
            labels=content.labels,
            organs=np.array(content.organs, dtype=str),
            spacing=np.asarray(content.spacing, dtype=np.float64),
            meta=np.array(json.dumps(meta)),
        )
    return path


def read_atlas_file(path: str | os.PathLike[str]) -> AtlasArrays:
    """Read an atlas file.

    Raises:
        AtlasFileError: not an organsam atlas file (one line naming the file and the fix).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != ATLAS_FORMAT:
                raise AtlasFileError(
                    f"{path}: format {meta.get('format')!r} is not {ATLAS_FORMAT}; rebuild it with "
                    f"`organsam atlas build`"
                )
            return AtlasArrays(
                image=z["image"].astype(np.float32),
                labels=z["labels"],
                organs=[str(o) for o in z["organs"]],
                spacing=tuple(float(s) for s in z["spacing"]),  # type: ignore[arg-type]
                meta=meta,
            )
    except AtlasFileError:
        raise
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise AtlasFileError(
            f"{path}: not a readable organsam atlas file ({e}); rebuild it with `organsam atlas build`"
        ) from e
