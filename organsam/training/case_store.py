"""Loaded training cases with, per slice, the area of every vocabulary organ (the sampling index).

``CaseStore(cases, organ_ids)`` reads every case once (:func:`organsam.training.datasets.load_case`), maps
its label values to the design's vocabulary (an organ is *known* for a case when the case's label map has
values for it, its own or those of its parts: ``LabelMap.values_for``) and counts, for every axial slice,
how many pixels each known organ covers. With ``cache_dir`` the display image and label map of each case are
stored as ``.npy`` files and memory-mapped on later runs (large datasets do not have to fit in memory and
are decoded once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from organsam.io.files import atomic_path
from organsam.training.datasets import LoadedCase, load_case
from organsam.training.manifest import Case

logger = logging.getLogger(__name__)

__all__ = ["CaseStore", "organ_label_values"]

_CACHE_VERSION = "case-cache-v1"


def organ_label_values(labelmap: dict[int, str | None], organ_ids: Sequence[str]) -> list[np.ndarray | None]:
    """For each organ id, the label values whose union is that organ (``None``: the map does not label it).

    Uses the vocabulary's part structure: ``adrenal_glands`` on a map with both adrenal glands is the union
    of their values; ``prostate`` on AMOS (which only labels prostate/uterus together) is unknown.
    """
    from organsam.vocabulary import LabelMap, load_vocabulary

    vocab = load_vocabulary()
    lm = LabelMap(
        name="case",
        title="",
        aliases=(),
        modality="",
        source="",
        description="",
        labels={},
        organs=dict(labelmap),
    )
    out: list[np.ndarray | None] = []
    for oid in organ_ids:
        values = lm.values_for(oid, vocab) if oid in vocab else []
        out.append(np.asarray(sorted(values), dtype=np.int64) if values else None)
    return out


def _file_key(ref: object) -> str:
    if isinstance(ref, (str, Path)) and os.path.exists(ref):
        st = os.stat(ref)
        return f"{Path(ref).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return repr(ref)


class CaseStore:
    """Cases in memory (or memory-mapped) with per-slice organ areas.

    Args:
        cases: the cases of one split.
        organ_ids: the design vocabulary (``model.organ_ids``), K ids; area columns follow this order.
        window: CT window for display intensities.
        cache_dir: folder for the ``.npy`` case cache (``None``: keep everything in memory).

    Attributes:
        data: the :class:`LoadedCase` of every case.
        values: per case, per organ: label values (``None`` when the case does not label the organ).
        known: per case, (K,) bool: the organ is labelled by the case's dataset.
        areas: per case, (Z, K) int64 pixel counts of each organ on each slice (0 where unknown).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        organ_ids: Sequence[str],
        *,
        window: str = "abdomen",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.organ_ids = list(organ_ids)
        self.cases = list(cases)
        self.window = window
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.data: list[LoadedCase] = []
        self.values: list[list[np.ndarray | None]] = []
        self.known: list[np.ndarray] = []
        self.areas: list[np.ndarray] = []
        for case in self.cases:
            loaded = self._load(case)
            vals = organ_label_values(loaded.labelmap, self.organ_ids)
            self.data.append(loaded)
            self.values.append(vals)
            self.known.append(np.array([v is not None for v in vals], dtype=bool))
            self.areas.append(self._slice_areas(loaded.labels, vals))
            logger.info(
                "case %s: %s, %d known organs, %d organs present",
                case.case_id,
                loaded.image.shape,
                int(self.known[-1].sum()),
                int((self.areas[-1].sum(0) > 0).sum()),
            )

    def __len__(self) -> int:
        return len(self.cases)

    # ------------------------------------------------------------------ loading / cache
    def _cache_paths(self, case: Case) -> tuple[Path, Path, Path]:
        assert self.cache_dir is not None
        key = hashlib.sha256(
            "|".join(
                [
                    _CACHE_VERSION,
                    case.case_id,
                    case.loader,
                    self.window,
                    str(case.labelmap),
                    _file_key(case.image),
                    _file_key(case.label),
                    json.dumps(case.options, sort_keys=True, default=str),
                ]
            ).encode()
        ).hexdigest()
        stem = self.cache_dir / f"{case.case_id}-{key[:16]}"
        return stem.with_suffix(".image.npy"), stem.with_suffix(".labels.npy"), stem.with_suffix(".json")

    def _load(self, case: Case) -> LoadedCase:
        if self.cache_dir is None or isinstance(case.image, np.ndarray):
            return load_case(case, self.window)
        img_p, lab_p, meta_p = self._cache_paths(case)
        if img_p.is_file() and lab_p.is_file() and meta_p.is_file():
            meta = json.loads(meta_p.read_text())
            return LoadedCase(
                case,
                np.load(img_p, mmap_mode="r"),
                np.load(lab_p, mmap_mode="r"),
                tuple(meta["spacing"]),
                meta["modality"],
                {int(k): v for k, v in meta["labelmap"].items()},
            )
        loaded = load_case(case, self.window)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for path, arr in ((img_p, loaded.image.astype(np.float32)), (lab_p, loaded.labels)):
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr))
        meta_p.write_text(
            json.dumps(
                {
                    "spacing": list(loaded.spacing),
                    "modality": loaded.modality,
                    "labelmap": {str(k): v for k, v in loaded.labelmap.items()},
                    "case": case.case_id,
                }
            )
        )
        return loaded

    @staticmethod
    def _slice_areas(labels: np.ndarray, values: list[np.ndarray | None]) -> np.ndarray:
        Z = labels.shape[0]
        K = len(values)
        wanted = sorted({int(v) for vals in values if vals is not None for v in vals})
        if not wanted:
            return np.zeros((Z, K), dtype=np.int64)
        lut_size = max(wanted) + 1
        member = np.zeros((lut_size, K), dtype=np.int64)
        for k, vals in enumerate(values):
            if vals is not None:
                member[vals, k] = 1
        counts = np.zeros((Z, lut_size), dtype=np.int64)
        for z in range(Z):
            lab = np.asarray(labels[z]).ravel()
            lab = lab[(lab > 0) & (lab < lut_size)]
            counts[z] = np.bincount(lab.astype(np.int64), minlength=lut_size)
        return counts @ member

    # ------------------------------------------------------------------ access
    def slice_shape(self, case_index: int) -> tuple[int, int]:
        """(H, W) of the case's axial slices."""
        return tuple(self.data[case_index].image.shape[1:])  # type: ignore[return-value]

    def model_scale(self, case_index: int) -> float:
        """Model pixels per original pixel (``256 / max(H, W)``)."""
        return 256.0 / max(self.slice_shape(case_index))

    def image_slice(self, case_index: int, z: int) -> np.ndarray:
        """(H, W) float32 display intensities of one slice."""
        return np.asarray(self.data[case_index].image[z], dtype=np.float32)

    def organ_mask(self, case_index: int, z: int, organ: int) -> np.ndarray:
        """(H, W) bool mask of vocabulary organ ``organ`` (index into ``organ_ids``) on slice ``z``.

        Raises:
            ValueError: the organ is unknown for this case.
        """
        vals = self.values[case_index][organ]
        if vals is None:
            raise ValueError(f"organ {self.organ_ids[organ]} is not labelled in case {self.cases[case_index].case_id}")
        return np.isin(np.asarray(self.data[case_index].labels[z]), vals)

    def case_index(self, case_id: str) -> int:
        """Position of a case id."""
        for i, c in enumerate(self.cases):
            if c.case_id == case_id:
                return i
        raise KeyError(f"case {case_id!r} is not in this store ({[c.case_id for c in self.cases]})")
