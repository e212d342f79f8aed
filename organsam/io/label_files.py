"""Label names and colours where viewers read them.

A label map alone is a grid of numbers. Each writer here puts the organ names and colours into a file that a viewer
reads on its own:

* :func:`nifti_label_extension`: a NIfTI header extension holding an XML label table (``<LabelTable><Label Key=
  ... Red= Green= Blue= Alpha=>name</Label>``), the form TotalSegmentator's ``--ml`` output uses;
* :func:`write_itksnap_labels`: an ITK-SNAP label description file (Segmentation > Import Label Descriptions);
* :func:`write_seg_nrrd`: a 3D Slicer segmentation (``.seg.nrrd``): the label map with one ``SegmentN_*`` block
  per organ (name, colour, label value, extent), which Slicer opens as named, coloured segments.

``table`` is always label value -> (name, RGB 0..255).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "LabelTable",
    "label_xml_names",
    "nifti_label_extension",
    "read_itksnap_labels",
    "write_itksnap_labels",
    "write_seg_nrrd",
]

LabelTable = Mapping[int, tuple[str, tuple[int, int, int]]]

#: NIfTI extension code of the label table (0: "unknown/private", as TotalSegmentator writes it).
NIFTI_LABEL_ECODE = 0


def nifti_label_extension(table: LabelTable) -> object:
    """A ``nibabel`` NIfTI-1 extension with the XML label table (colours as 0..1)."""
    import nibabel as nib

    rows = [
        f'<Label Key="{v}" Red="{c[0] / 255:.4f}" Green="{c[1] / 255:.4f}" Blue="{c[2] / 255:.4f}" '
        f'Alpha="1"><![CDATA[{name}]]></Label>'
        for v, (name, c) in sorted(table.items())
    ]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<CaretExtension>\n<VolumeInformation Index="0">\n<LabelTable>\n'
        + "\n".join(rows)
        + "\n</LabelTable>\n</VolumeInformation>\n</CaretExtension>\n"
    )
    return nib.nifti1.Nifti1Extension(NIFTI_LABEL_ECODE, xml.encode("utf-8"))


def itksnap_label_text(table: LabelTable) -> str:
    """The text of an ITK-SNAP label description file (background first, then each label)."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (written by organsam)",
        "# Columns: IDX -R- -G- -B- -A-- VIS MSH LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for v, (name, c) in sorted(table.items()):
        label = name.replace('"', "'")
        lines.append(f'{v:5d} {c[0]:5d} {c[1]:4d} {c[2]:4d}        1  1  1    "{label}"')
    return "\n".join(lines) + "\n"


def write_itksnap_labels(table: LabelTable, path: str | Path) -> Path:
    """Write an ITK-SNAP label description file."""
    out = Path(path)
    out.write_text(itksnap_label_text(table), encoding="utf-8")
    return out


_ITKSNAP_ROW = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d)\s+(\d)\s+"(.*)"\s*$')


def read_itksnap_labels(path: str | Path) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """Read an ITK-SNAP label description file back (label value -> (name, RGB)); background left out."""
    out: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        m = _ITKSNAP_ROW.match(line)
        if m is None:
            raise ValueError(f"{path}: not an ITK-SNAP label description line: {line!r}")
        if int(m.group(1)) != 0:
            out[int(m.group(1))] = (m.group(8), (int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return out


def write_seg_nrrd(labels_ijk: np.ndarray, affine_ras: np.ndarray, table: LabelTable, path: str | Path) -> Path:
    """Write a 3D Slicer segmentation file (one layer, one segment per label of ``table`` present in the map).

    Args:
        labels_ijk: integer label map indexed (i, j, k) as in the NIfTI file written beside it.
        affine_ras: (4, 4) voxel (i, j, k) -> RAS mm.
        table: label value -> (name, RGB).
        path: output file, ending ``.seg.nrrd`` (written as is; callers make it atomic).
    """
    import nrrd

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, dtype=float)
    header: dict[str, object] = {
        "type": "unsigned char" if labels_ijk.dtype == np.uint8 else "unsigned short",
        "dimension": 3,
        "space": "left-posterior-superior",
        "sizes": np.array(labels_ijk.shape),
        "space directions": lps[:3, :3].T,  # row a: the step in mm of index axis a
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    extents = ndimage.find_objects(labels_ijk)  # one pass for every label's bounding box
    present = [v for v in sorted(table) if 0 < v <= len(extents) and extents[v - 1] is not None]
    for n, v in enumerate(present):
        name, c = table[v]
        ext = extents[v - 1]
        lo, hi = [s.start for s in ext], [s.stop - 1 for s in ext]
        key = f"Segment{n}_"
        header[key + "ID"] = f"Segment_{v}"
        header[key + "Name"] = name
        header[key + "NameAutoGenerated"] = "0"
        header[key + "Color"] = " ".join(f"{x / 255:.6f}" for x in c)
        header[key + "ColorAutoGenerated"] = "0"
        header[key + "LabelValue"] = str(v)
        header[key + "Layer"] = "0"
        header[key + "Extent"] = " ".join(f"{a} {b}" for a, b in zip(lo, hi))
        header[key + "Tags"] = "|"
    buf = io.BytesIO()
    nrrd.write(buf, np.ascontiguousarray(labels_ijk), header, index_order="F")
    head, sep, body = buf.getvalue().partition(b"\n\n")
    # pynrrd stamps the time of writing into a comment: drop it, so that the same result gives the same bytes
    head = re.sub(rb"\n# on [^\n]*\(GMT\)\.", b"", head)
    out = Path(path)
    out.write_bytes(head + sep + body)
    return out


def label_xml_names(xml: bytes) -> dict[int, str]:
    """label value -> name from the XML of :func:`nifti_label_extension` (for readers and tests)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    return {int(e.attrib["Key"]): e.text or "" for e in root.iter("Label")}
