"""The fixed label value and colour of each organ, used by every output (``segmentation.nii.gz``, ``.seg.nrrd``,
the ITK-SNAP label file, DICOM-SEG, ``overview.png`` and the viewer). The numbers live in ``organs.json``
(``label_value``, ``color``; see its ``labels_note``): label values are TotalSegmentator v2's where TotalSegmentator
has the class, so "spleen, liver" and "liver, spleen" give the same file."""

from __future__ import annotations

from collections.abc import Iterable

from organsam.vocabulary.vocabulary import load_vocabulary

__all__ = ["label_table", "organ_color", "organ_label"]


def organ_label(organ_id: str) -> int:
    """The organ's fixed label value."""
    value = load_vocabulary()[organ_id].label_value
    if value is None:
        raise ValueError(f"organ {organ_id!r} has no label_value in the vocabulary")
    return value


def organ_color(organ_id: str) -> tuple[int, int, int]:
    """The organ's fixed display colour, RGB 0..255."""
    color = load_vocabulary()[organ_id].color
    return (128, 128, 128) if color is None else color


def label_table(organ_ids: Iterable[str]) -> dict[int, str]:
    """label value -> organ id for these organs, in ascending label value."""
    return dict(sorted((organ_label(oid), oid) for oid in organ_ids))
