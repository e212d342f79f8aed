"""Dataset readers: one class per folder layout, registered by name; each lists the labelled cases.

``read_dataset(name, root, **options) -> list[Case]`` (see :class:`~organsam.training.manifest.Case`);
``load_case(case) -> LoadedCase`` reads one case into organsam's canonical (Z, Y, X) layout with display
intensities (CT abdomen window / MR percentiles / 8-bit data kept) and its integer label map.

Registered layouts (``list_datasets()``):

=================  ===================================================================================
``nnunet``/``msd``  ``dataset.json`` + ``imagesTr``/``labelsTr`` (nnU-Net v1/v2 raw, Medical Segmentation
                    Decathlon); label map from ``dataset.json`` (or ``labelmap=``), channel 0 only.
``amos22``          AMOS22: ``imagesTr``/``labelsTr`` (train), ``imagesVa``/``labelsVa`` (val), optional
                    ``dataset.json``; ids > 500 are MR.
``btcv``            BTCV raw (``RawData/Training``): ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz``.
``synapse``         Synapse as preprocessed for TransUNet: ``train_npz/caseXXXX_sliceYYY.npz`` (keys image,
                    label) and ``test_vol_h5/caseXXXX.npy.h5`` (needs h5py), with the 18-train/12-test list.
``word``            WORD: ``imagesTr``/``labelsTr``, ``imagesVal``/``labelsVal``, ``imagesTs``/``labelsTs``.
``flare22``         FLARE22: ``images/FLARE22_Tr_XXXX_0000.nii.gz`` + ``labels/FLARE22_Tr_XXXX.nii.gz``
                    (``Tuning``/``Validation`` folders become val).
``totalsegmentator``  TotalSegmentator subjects: ``<id>/ct.nii.gz`` + ``<id>/segmentations/<class>.nii.gz``,
                    split from ``meta.csv`` when present.
``cvpr_npz``        CVPR MedSAM-on-laptop challenge ``.npz`` (imgs, gts, spacing); label map per file via
                    ``labelmap=`` or ``labelmaps={glob: name}`` (files without one are skipped).
``manifest``        a CSV/JSON manifest (``root`` is the manifest file).
``shared``          the project's real-data folder (``../shared/data``): train ts_a, ts_b_dicom,
                    amos_0001_slab; val amos_0013_slab.
=================  ===================================================================================

Organs a dataset does not label are *unknown* for its cases (never prompted, left out of the class
loss); organs it labels but that are not on a slice are *absent* (negatives).
Common reader options: ``patient_regex`` (a regex whose first group, searched in the case id, is the
patient id; default: the case id), ``labelmap`` (override the label map).
"""

from __future__ import annotations

import importlib
import pkgutil

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    get_dataset_reader,
    list_datasets,
    read_dataset,
    register_dataset,
)
from organsam.training.datasets.loading import LoadedCase, load_case, register_loader, resolve_labelmap
from organsam.training.datasets.shared import SHARED_CASES, default_shared_root
from organsam.training.datasets.synapse import SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES

#: Every other module of this package is one reader, registered by its ``@register_dataset`` when imported here.
_NOT_READERS = frozenset({"base", "loading"})
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_READERS:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DatasetReader",
    "DatasetError",
    "LoadedCase",
    "SHARED_CASES",
    "default_shared_root",
    "register_dataset",
    "list_datasets",
    "get_dataset_reader",
    "read_dataset",
    "load_case",
    "resolve_labelmap",
    "SYNAPSE_TRAIN_CASES",
    "SYNAPSE_TEST_CASES",
    "register_loader",
]
