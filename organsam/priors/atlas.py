"""Atlas organ prior: register a labelled CT onto the target and use its warped organ masks.

No learning: one labelled CT (by default the TotalSegmentator example CT ``ts_a``, shipped in the package as
``organsam/assets/atlas_ts_a.npz``, SHA-256 checked) is registered onto the target CT
(``registration.register_atlas``: z-level search, affine, Demons) and its organ labels are pulled onto the target
grid. The warped masks are a coarse prior (mean Dice 0.56-0.57 over the 8 Synapse organs on the two AMOS slabs);
their per-slice boxes, widened by a margin, are meant as box prompts for a SAM-style decoder. Example::

    prior = AtlasPrior()                      # default_atlas(): $ORGANSAM_ATLAS or the packaged ts_a atlas
    result = prior.fit(volume)                # an organsam.io.Volume, or (array, spacing)
    if result.present("liver"):
        boxes = result.boxes("liver", margin_px=10)   # {slice index: (x0, y0, x1, y1)}
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from organsam.priors.atlas_file import AtlasArrays, read_atlas_file, write_atlas_file
from organsam.priors.boxes import Box, mask_to_boxes
from organsam.priors.pseudo_ct import registration_image
from organsam.priors.registration import (
    AtlasTransform,
    RegistrationSettings,
    register_atlas,
    warp_labels,
)

logger = logging.getLogger(__name__)

__all__ = ["ATLAS_ENV", "Atlas", "AtlasNotFoundError", "AtlasPrior", "AtlasResult", "atlas_source", "default_atlas"]

#: Environment variable naming an atlas file (``organsam atlas build``), or a folder with ``image.nii.gz``,
#: ``label.nii.gz`` and ``labelmap.json``.
ATLAS_ENV = "ORGANSAM_ATLAS"
#: The atlas shipped in the package (a key of ``organsam.weights.WEIGHTS``).
PACKAGED_ATLAS = "atlas"


class AtlasNotFoundError(FileNotFoundError):
    """No atlas files where they were looked for."""


@dataclass(eq=False)
class Atlas:
    """A labelled CT in the canonical layout.

    Attributes:
        image: (Z, Y, X) float32 HU, canonical layout (inferior->superior, posterior->anterior,
            right->left).
        spacing: (sz, sy, sx) in mm.
        labels: (Z, Y, X) integer label map on the same grid (0 = background).
        label_to_organ: label value -> vocabulary organ id; values absent from it (or mapped to
            ``None`` in the source map) are ignored. Several values may share one organ id.
        name: a short name for logs.
        meta: provenance (source, licence, how it was built) when read from an atlas file.
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    labels: np.ndarray
    label_to_organ: dict[int, str]
    name: str = "atlas"
    meta: dict[str, Any] = field(default_factory=dict)
    _organ_ids: list[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.labels.shape != self.image.shape:
            raise ValueError(
                f"atlas {self.name!r}: image {self.image.shape} and labels {self.labels.shape} "
                "must be 3D (Z, Y, X) arrays of the same shape"
            )
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.label_to_organ = {int(k): str(v) for k, v in self.label_to_organ.items() if v is not None}

    @classmethod
    def from_files(
        cls,
        image_path: str | Path,
        label_path: str | Path,
        labelmap: str | Path | Mapping[int, str | None],
        name: str | None = None,
    ) -> Atlas:
        """Read an atlas from an image and a label file (any format ``organsam.io`` reads).

        Args:
            image_path: the CT (HU).
            label_path: its label map, on the same grid.
            labelmap: a packaged label map name (``"totalsegmentator_v2"``), the path of a json file
                of label value -> class name (resolved with ``organsam.vocabulary``), or a mapping
                label value -> organ id.
            name: name for logs (default: the image's folder name).

        Raises:
            AtlasNotFoundError: a file is missing.
            ValueError: unreadable files, a label grid that differs from the image's, or an unknown
                label map.
        """
        from organsam.io import load_labels, load_volume
        from organsam.vocabulary import load_labelmap

        for p in (image_path, label_path):
            if not Path(p).exists():
                raise AtlasNotFoundError(f"atlas file {p} does not exist")
        vol = load_volume(image_path, modality="CT")
        labels = load_labels(label_path, vol)
        mapping = dict(labelmap) if isinstance(labelmap, Mapping) else load_labelmap(str(labelmap))
        atlas = cls(
            image=vol.array,
            spacing=vol.spacing,
            labels=labels,
            label_to_organ={k: v for k, v in mapping.items() if v is not None},
            name=name or Path(image_path).resolve().parent.name,
        )
        logger.info(
            "atlas %s: %s voxels at %s mm, %d organs",
            atlas.name,
            atlas.image.shape,
            atlas.spacing,
            len(atlas.organ_ids()),
        )
        return atlas

    def save(self, path: str | Path, *, source: str = "", licence: str = "", command: str = "") -> Path:
        """Write this atlas as one compact file (:mod:`organsam.priors.atlas_file`), with its provenance."""
        labels, organs = self.compact_labels()
        meta = {"name": self.name, "modality": "CT", "source": source, "licence": licence, "command": command}
        return write_atlas_file(path, AtlasArrays(self.image, labels, organs, self.spacing, meta))

    @classmethod
    def load(cls, path: str | Path) -> Atlas:
        """Read an atlas file written by :meth:`save` (``organsam atlas build``)."""
        content = read_atlas_file(path)
        return cls(
            image=content.image,
            spacing=content.spacing,
            labels=content.labels,
            label_to_organ={i + 1: o for i, o in enumerate(content.organs)},
            name=str(content.meta.get("name") or Path(path).stem),
            meta=content.meta,
        )

    def organ_ids(self) -> list[str]:
        """Organ ids that have at least one voxel in the atlas, in label-value order (computed once)."""
        if self._organ_ids is None:
            present = set(np.unique(self.labels).tolist())
            out: list[str] = []
            for v, o in sorted(self.label_to_organ.items()):
                if v in present and o not in out:
                    out.append(o)
            self._organ_ids = out
        return list(self._organ_ids)

    def compact_labels(self) -> tuple[np.ndarray, list[str]]:
        """The label map with one value per organ: value ``i + 1`` is ``organ_ids()[i]``.

        Returns:
            ((Z, Y, X) uint8 or uint16 label map, organ ids).
        """
        organs = self.organ_ids()
        index = {o: i + 1 for i, o in enumerate(organs)}
        top = int(self.labels.max(initial=0))
        lut = np.zeros(top + 1, np.uint16 if len(organs) > 255 else np.uint8)
        for v, o in self.label_to_organ.items():
            if 0 < v <= top and o in index:
                lut[v] = index[o]
        return lut[self.labels], organs


def atlas_source() -> str:
    """Where :func:`default_atlas` takes the atlas from: ``$ORGANSAM_ATLAS`` or the packaged file."""
    env = os.environ.get(ATLAS_ENV)
    if env:
        return f"${ATLAS_ENV}={env}"
    from organsam.weights import find_weight

    return str(find_weight(PACKAGED_ATLAS))


def default_atlas() -> Atlas:
    """The atlas to use when none is given.

    ``$ORGANSAM_ATLAS`` when set: an atlas file (``organsam atlas build``) or a folder with ``image.nii.gz``,
    ``label.nii.gz`` and ``labelmap.json`` (label value -> class name); otherwise the atlas shipped in the
    package (the TotalSegmentator example CT ``ts_a``, SHA-256 checked; ``organsam weights`` lists it).

    Raises:
        AtlasNotFoundError: ``$ORGANSAM_ATLAS`` names something missing, or the packaged file is missing or
            corrupt; the message says what to do.
    """
    env = os.environ.get(ATLAS_ENV)
    if env:
        d = Path(env)
        if d.is_file():
            return Atlas.load(d)
        files = [d / "image.nii.gz", d / "label.nii.gz", d / "labelmap.json"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise AtlasNotFoundError(
                f"${ATLAS_ENV}={env} is set but {', '.join(missing)} is missing; set it to an "
                "atlas file (organsam atlas build) or a folder with image.nii.gz (CT in HU), "
                "label.nii.gz and labelmap.json (label value -> class name)"
            )
        return Atlas.from_files(files[0], files[1], files[2], name=d.name)
    from organsam.weights import WeightsError, find_weight

    try:
        path = find_weight(PACKAGED_ATLAS)
    except WeightsError as e:
        raise AtlasNotFoundError(f"the packaged atlas is unusable: {e}; or set {ATLAS_ENV} to an atlas file") from e
    return Atlas.load(path)


class _LazyMasks(Mapping):
    """organ id -> (Z, Y, X) bool mask, computed from the compact label map on access."""

    def __init__(self, result: AtlasResult) -> None:
        self._r = result

    def __getitem__(self, organ_id: str) -> np.ndarray:
        if organ_id not in self._r.present_organs:
            raise KeyError(organ_id)
        return self._r.labels == (self._r.organ_ids.index(organ_id) + 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._r.present_organs)

    def __len__(self) -> int:
        return len(self._r.present_organs)


@dataclass(eq=False)
class AtlasResult:
    """Atlas organ masks warped onto a target volume.

    Attributes:
        labels: (Z, Y, X) compact label map on the target grid: value ``i + 1`` is ``organ_ids[i]``.
        organ_ids: atlas organ ids, in compact label order.
        transform: the registration result (target physical point -> atlas physical point).
        spacing: (sz, sy, sx) of the target grid in mm.
        seconds: wall time of ``AtlasPrior.fit`` (registration + warping).
    """

    labels: np.ndarray
    organ_ids: list[str]
    transform: AtlasTransform
    spacing: tuple[float, float, float]
    seconds: float = 0.0
    _present: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        counts = np.bincount(self.labels.ravel(), minlength=len(self.organ_ids) + 1)
        self._present = [o for i, o in enumerate(self.organ_ids) if counts[i + 1] > 0]

    @property
    def present_organs(self) -> list[str]:
        """Atlas organs with at least one voxel on the target grid."""
        return list(self._present)

    @property
    def masks(self) -> Mapping[str, np.ndarray]:
        """organ id -> (Z, Y, X) bool warped atlas mask, for every organ in ``present_organs``.

        Masks are computed on access (one comparison of the label map), so that holding a result
        does not hold one full-size mask per atlas organ.
        """
        return _LazyMasks(self)

    def _members(self, organ_id: str) -> list[str]:
        """Atlas organs whose union is ``organ_id``: itself, or its parts (e.g. lung_left -> lobes)."""
        if organ_id in self.organ_ids:
            return [organ_id]
        try:
            from organsam.vocabulary import load_vocabulary

            vocab = load_vocabulary()
            wanted = set(vocab.expand_parts(organ_id))
        except (KeyError, ValueError):
            return []
        out = []
        for o in self.organ_ids:
            try:
                leaves = set(vocab.expand_parts(o))
            except (KeyError, ValueError):
                continue
            if leaves & wanted and leaves <= wanted:
                out.append(o)
        return out

    def mask(self, organ_id: str) -> np.ndarray:
        """(Z, Y, X) bool warped mask of ``organ_id`` (union of its parts for a combined id such as
        ``lung_left``); all False when the atlas does not have it or it falls outside the target."""
        values = [self.organ_ids.index(o) + 1 for o in self._members(organ_id)]
        if not values:
            return np.zeros(self.labels.shape, bool)
        return np.isin(self.labels, values)

    def present(self, organ_id: str, min_voxels: int = 1) -> bool:
        """Whether the warped atlas puts at least ``min_voxels`` voxels of ``organ_id`` in the target."""
        values = [self.organ_ids.index(o) + 1 for o in self._members(organ_id)]
        if not values:
            return False
        return int(np.isin(self.labels, values).sum()) >= max(int(min_voxels), 1)

    def boxes(self, organ_id: str, margin_px: int = 10) -> dict[int, Box]:
        """Per-slice boxes of the warped mask of ``organ_id``.

        Args:
            organ_id: vocabulary organ id (combined ids such as ``lung_left`` use the union of parts).
            margin_px: pixels added on every side of each slice's box, then clipped to the slice.

        Returns:
            ``{slice_index: (x0, y0, x1, y1)}`` in the slice's pixel coordinates (x = column,
            y = row, inclusive bounds); empty when the organ is absent.
        """
        return mask_to_boxes(self.mask(organ_id), margin_px)


class AtlasPrior:
    """Registers an atlas onto target CTs and returns its warped organ masks.

    Args:
        atlas: the labelled CT; ``None`` uses ``default_atlas()`` (loaded on first use).
        fast: skip the Demons stage and work on a coarser grid (about 1 s instead of 3-10 s).
        settings: explicit registration settings (override ``fast``).
    """

    def __init__(
        self, atlas: Atlas | None = None, *, fast: bool = False, settings: RegistrationSettings | None = None
    ) -> None:
        self._atlas = atlas
        self.fast = fast
        self.settings = settings
        self._compact: tuple[np.ndarray, list[str]] | None = None

    @property
    def atlas(self) -> Atlas:
        """The atlas (the default one is loaded on first access)."""
        if self._atlas is None:
            self._atlas = default_atlas()
        return self._atlas

    def fit(self, volume: np.ndarray | Any, spacing: Sequence[float] | None = None) -> AtlasResult:
        """Register the atlas onto a target CT and warp its organ labels onto the target grid.

        Args:
            volume: (Z, Y, X) target CT in HU in the canonical layout, or an ``organsam.io.Volume`` (its
                ``spacing`` and :func:`~organsam.priors.pseudo_ct.registration_image`: an MR becomes a pseudo-CT).
            spacing: (sz, sy, sx) in mm; required for a plain array.

        Returns:
            The ``AtlasResult`` (warped masks, boxes, transform).

        Raises:
            ValueError: no spacing for a plain array, or the registration cannot run
                (``RegistrationError``).
        """
        settings = self.settings
        if hasattr(volume, "array") and hasattr(volume, "spacing"):
            spacing = volume.spacing if spacing is None else spacing
            if getattr(volume, "modality", "CT") == "MR":  # Demons compares intensities: not across modalities
                settings = replace(settings or RegistrationSettings.default(self.fast), demons_levels=())
            volume = registration_image(volume)  # an MR becomes a pseudo-CT
        if spacing is None:
            raise ValueError("AtlasPrior.fit: give the target's spacing (sz, sy, sx) in mm with a plain array")
        array = np.asarray(volume)
        sp = tuple(float(s) for s in spacing)
        atlas = self.atlas
        t0 = time.perf_counter()
        tx = register_atlas(array, sp, atlas.image, atlas.spacing, fast=self.fast, settings=settings)
        if self._compact is None:
            self._compact = atlas.compact_labels()
        compact, organs = self._compact
        warped = warp_labels(compact, tx, array.shape, sp, atlas.spacing)
        seconds = time.perf_counter() - t0
        result = AtlasResult(
            labels=warped,
            organ_ids=list(organs),
            transform=tx,
            spacing=sp,  # type: ignore[arg-type]
            seconds=seconds,
        )
        logger.info(
            "atlas prior (%s) on %s: %.1f s, %d of %d atlas organs on the target grid",
            atlas.name,
            array.shape,
            seconds,
            len(result.present_organs),
            len(organs),
        )
        return result
