"""The TransUNet Synapse ``test_vol_h5`` reader on a real CT: AMOS 0013 stored the way TransUNet stores Synapse.

TransUNet's ``test_vol_h5/caseXXXX.npy.h5`` holds ``image`` (Z, H, W) float32, HU clipped to [-125, 275] and
scaled to [0, 1], and ``label`` (Z, H, W) with the 8 Synapse organ values (float in the released files). The
real AMOS 0013 slab (manual labels) is written in that form with its AMOS labels mapped to the Synapse values.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.training.datasets import SYNAPSE_TEST_CASES, load_case, read_dataset
from organsam.vocabulary import load_labelmap, load_vocabulary

h5py = pytest.importorskip("h5py")

#: AMOS22 label value of each Synapse organ (AMOS: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder,
#: 6 liver, 7 stomach, 8 aorta, 10 pancreas).
AMOS_VALUE = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "pancreas": 10,
}


@pytest.fixture(scope="module")
def amos13():
    from organsam.io import load_labels, load_volume

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    return vol, np.asarray(load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol))


def test_h5_volume_reads_a_real_ct_with_synapse_labels(tmp_path, amos13):
    vol, amos = amos13
    synapse = load_labelmap("synapse")  # {1: "aorta", ..., 8: "stomach"}
    assert sorted(v for v in synapse if v) == list(range(1, 9))
    label = np.zeros(amos.shape, dtype=np.float32)
    for value, organ in synapse.items():
        if value:
            label[amos == AMOS_VALUE[organ]] = value
    image01 = ((np.clip(vol.array, -125, 275) + 125) / 400.0).astype(np.float32)
    folder = tmp_path / "test_vol_h5"
    folder.mkdir()
    with h5py.File(folder / "case0001.npy.h5", "w") as f:
        f.create_dataset("image", data=image01)
        f.create_dataset("label", data=label)

    (case,) = read_dataset("synapse", tmp_path)
    assert case.case_id == "synapse_0001" and case.loader == "h5_volume"
    assert "0001" in SYNAPSE_TEST_CASES and case.split == "test"
    loaded = load_case(case)
    assert loaded.image.shape == loaded.labels.shape == vol.shape == image01.shape
    assert loaded.image.dtype == np.float32 and np.issubdtype(loaded.labels.dtype, np.integer)
    np.testing.assert_allclose(loaded.image, image01 * 255.0, atol=1e-3)
    np.testing.assert_array_equal(loaded.labels, label.astype(np.int32))
    assert loaded.modality == "CT"
    # Every label value maps to a vocabulary organ, and each organ keeps its real voxels.
    vocab = load_vocabulary()
    present = sorted(int(v) for v in np.unique(loaded.labels) if v)
    assert len(present) >= 6, present  # the abdominal slab shows most of the 8 organs
    for value in present:
        organ = loaded.labelmap[value]
        assert organ in vocab, organ
        assert organ == synapse[value]
        assert int((loaded.labels == value).sum()) == int((amos == AMOS_VALUE[organ]).sum()) > 0
    # Organs outside the 8 (e.g. AMOS esophagus 5, IVC 9) are background in the Synapse labels.
    assert not loaded.labels[amos == 9].any()
