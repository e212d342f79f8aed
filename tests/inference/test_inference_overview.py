"""overview.png shows the slices as a radiologist reads them: axial anterior up with the patient's right on the
image's left, coronal superior up (checked on a real CT with its manual labels)."""

from __future__ import annotations

import numpy as np
from conftest import data_path
from PIL import Image

from organsam.inference.overview import HEADER_PX, render_overview
from organsam.io import load_labels, load_volume
from organsam.preprocessing.intensity import window_ct
from organsam.preprocessing.orientation import display_slice
from organsam.vocabulary import labelmap_info


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def test_display_slice_is_radiological_on_a_real_ct() -> None:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    labels = load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    z = vol.array.shape[0] // 2
    H, W = vol.array.shape[1:]
    liver = display_slice(np.isin(labels, amos.values_for("liver")), "axial", z)
    aorta = display_slice(np.isin(labels, amos.values_for("aorta")), "axial", z)
    bone = display_slice(vol.array > 400, "axial", z)
    bone[:, : W * 2 // 5] = False  # the spine: bone near the midline
    bone[:, W * 3 // 5 :] = False
    assert _centroid(liver)[1] < W / 2  # patient's right on the image's left
    assert _centroid(bone)[0] > _centroid(aorta)[0]  # the aorta lies in front of (above) the vertebra
    assert _centroid(bone)[0] > H / 2  # the spine in the lower (posterior) half
    with np.testing.assert_raises(ValueError):
        display_slice(vol.array, "oblique", 0)


def test_overview_axial_panel_has_the_spine_at_the_bottom(tmp_path) -> None:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    Z, Y, X = vol.array.shape
    spine = vol.array > 400
    spine[:, :, : X * 2 // 5] = False
    spine[:, :, X * 3 // 5 :] = False
    display = window_ct(vol.array, "abdomen").astype(np.uint8)
    out = render_overview(
        display, spine.astype(np.uint8), {1: ("spine", (230, 25, 75))}, tuple(vol.spacing), tmp_path / "o.png"
    )
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    h = 384  # axial panel height; the panel is the first one on the left, below the caption band
    w = round(h * X * vol.spacing[2] / (Y * vol.spacing[1]))
    panel = img[HEADER_PX : HEADER_PX + h, :w]
    red = (panel[..., 0] - panel[..., 1] > 60) & (panel[..., 0] - panel[..., 2] > 60)  # label 1 is drawn red
    assert red.sum() > 50
    assert _centroid(red)[0] > h / 2, "the vertebra must be drawn in the lower half (anterior up)"


def test_overview_of_a_thin_slab_keeps_captions_off_the_images(tmp_path) -> None:
    """An 11-slice slab: the coronal plane is a strip; it sits centred beside the axial panel, below the caption
    band, so no caption is drawn on an image."""
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    display = window_ct(vol.array, "abdomen").astype(np.uint8)
    labels = np.zeros(vol.array.shape, np.uint8)
    out = render_overview(display, labels, {}, tuple(vol.spacing), tmp_path / "o.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    Z, Y, X = vol.array.shape
    w = round(384 * X * vol.spacing[2] / (Y * vol.spacing[1]))
    strip_h = round(Z * vol.spacing[0] / (X * vol.spacing[2]) * w)
    coronal = img[:, w : 2 * w].sum(axis=(1, 2)) > 0  # rows where the coronal panel has anything drawn
    rows = np.flatnonzero(coronal[HEADER_PX:]) + HEADER_PX
    image_rows = rows[(rows > HEADER_PX + 120) & (rows < HEADER_PX + 264)]  # the strip, centred in 384 rows
    assert image_rows.size >= strip_h - 2, "the coronal strip is centred beside the axial panel"
    assert not coronal[HEADER_PX : HEADER_PX + 100].any(), "nothing above the strip: no caption on an image"
