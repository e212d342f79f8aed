"""Verification with the numbers of organs.json, on real reference masks (AMOS 0001 slab, manual labels)."""

from __future__ import annotations

import numpy as np
from conftest import data_path

from organsam.inference.pipeline import organ_report
from organsam.inference.verification import contact, verify_mask
from organsam.io import load_labels, load_volume
from organsam.vocabulary import labelmap_info, load_vocabulary


def test_a_mask_bigger_than_the_organ_can_be_is_rejected_and_reported() -> None:
    vol = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0001_slab", "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    adrenal = np.isin(ref, amos.values_for("adrenal_gland_left"))
    ivc = np.isin(ref, amos.values_for("inferior_vena_cava"))
    liver = np.isin(ref, amos.values_for("liver"))
    assert load_vocabulary()["adrenal_gland_left"].max_volume_ml == 25
    assert verify_mask("adrenal_gland_left", adrenal, vol.voxel_ml) is None  # the real gland passes
    assert verify_mask("inferior_vena_cava", ivc, vol.voxel_ml) is None  # no limit for a vessel (coverage varies)
    reason = verify_mask("adrenal_gland_left", liver, vol.voxel_ml)  # the liver drawn for an adrenal
    assert reason is not None and "more than the 25 mL" in reason and "left adrenal gland" in reason
    entry = organ_report("adrenal_gland_left", np.zeros_like(liver), vol, None, None, reason)
    assert entry["status"] == "rejected_by_verification" and entry["absent_reason"] == reason
    assert not entry["present"]


def test_a_mask_that_is_another_organs_structure_is_rejected() -> None:
    """Reference masks of AMOS 0001: an "adrenal" that is the IVC on its only slice is rejected; a gallbladder
    inside a duodenum mask that swallowed it (and much more), and the IVC itself, pass."""
    vol = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0001_slab", "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    ivc = np.isin(ref, amos.values_for("inferior_vena_cava"))
    gallbladder = np.isin(ref, amos.values_for("gallbladder"))
    z = int(np.flatnonzero(ivc.any(axis=(1, 2)))[-1])
    gland = np.zeros_like(ivc)
    gland[z] = ivc[z]  # the IVC's pixels on one slice, drawn for the right adrenal
    others = {"inferior_vena_cava": ivc, "gallbladder": gallbladder}
    reason = verify_mask("adrenal_gland_right", gland, vol.voxel_ml, others)
    assert reason is not None and "inferior vena cava" in reason and "right adrenal gland" in reason
    assert verify_mask("inferior_vena_cava", ivc, vol.voxel_ml, {"adrenal_gland_right": gland}) is None
    swallowing = gallbladder | np.isin(ref, amos.values_for("liver"))  # a mask far bigger than the gallbladder
    assert verify_mask("gallbladder", gallbladder, vol.voxel_ml, {"duodenum": swallowing}) is None
    # one structure on every slice of both: nothing tells which organ it is, both pass
    assert verify_mask("adrenal_gland_right", gland, vol.voxel_ml, {"inferior_vena_cava": gland.copy()}) is None


def test_a_kidney_wrapped_by_the_liver_is_rejected() -> None:
    """The real right kidney of AMOS 0001 lies on the liver along little of its outline and passes; a "kidney" cut
    out of the liver (a disc inside it, as the kidney's box drew on TS-B, a scan without kidneys) does not."""
    vol = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0001_slab", "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    kidney = np.isin(ref, amos.values_for("kidney_right"))
    liver = np.isin(ref, amos.values_for("liver"))
    assert load_vocabulary()["kidney_right"].max_contact == 0.5
    assert contact(kidney, liver) < 0.15
    assert verify_mask("kidney_right", kidney, vol.voxel_ml, {"liver": liver}) is None
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    ys, xs = np.nonzero(liver[z])
    cy, cx = int(np.median(ys)), int(np.median(xs))
    yy, xx = np.mgrid[: liver.shape[1], : liver.shape[2]]
    piece = np.zeros_like(liver)
    piece[z] = ((yy - cy) ** 2 + (xx - cx) ** 2 < 20**2) & liver[z]
    rest = liver & ~piece  # the liver's mask around the piece
    assert contact(piece, rest) > 0.9
    reason = verify_mask("kidney_right", piece, vol.voxel_ml, {"liver": rest})
    assert reason is not None and "along the liver" in reason and "right kidney" in reason
    assert verify_mask("gallbladder", piece, vol.voxel_ml, {"liver": rest}) is None  # no limit for it: not checked
