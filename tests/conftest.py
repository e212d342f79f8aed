"""Shared fixtures. Real data lives in ``../shared/data`` beside the repository (never committed);
tests that need it skip with a clear message where it is absent. ``ORGANSAM_DATA`` overrides the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ORGANSAM_DATA", REPO.parent / "shared" / "data"))
# Converted OpenVINO graphs (organsam.model.openvino_sam) go to a cache of the test run's own, not the user's.
os.environ.setdefault("ORGANSAM_CACHE_DIR", str(REPO / ".pytest_cache" / "organsam"))


def data_path(*parts: str) -> Path:
    """Path under the shared data folder; skips the calling test when it does not exist."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(
            f"real data not available: {p} is missing (expected ../shared/data beside the repo, or set ORGANSAM_DATA)"
        )
    return p


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder (skips when absent)."""
    return data_path()


def shipped_design_on_amos13(design: str, organs: list[str], every: int = 2) -> tuple:
    """A shipped design checkpoint and every ``every``-th slice of the held-out AMOS 0013 slab: ``(model, organ_index,
    [(plain encoder output, [reference mask (256, 256) in model space per organ]), ...])`` (skips without the data)."""
    import torch

    from organsam.inference.predictor_factory import resolve_checkpoint
    from organsam.model.checkpoint import load_checkpoint
    from organsam.preprocessing.slices import to_model_input_batch
    from organsam.training.case_store import CaseStore
    from organsam.training.datasets import read_dataset

    data_path("amos_0013_slab", "image.nii.gz")
    model = load_checkpoint(resolve_checkpoint(design, "packaged"), design=design).eval()
    store = CaseStore(read_dataset("shared", None, cases=["amos_0013"]), model.organ_ids, window="abdomen")
    organ_index = model.organ_index_of(organs)
    slices = []
    for z in range(0, store.areas[0].shape[0], every):
        imgs, geom = to_model_input_batch(store.image_slice(0, z)[None])
        with torch.no_grad():
            enc = model.encode_plain(torch.from_numpy(imgs))
        slices.append((enc, [geom.mask_to_model(store.organ_mask(0, z, k)) for k in organ_index.tolist()]))
    return model, organ_index, slices


def amos_liver_slice(slice_index: int = 10, margin: float = 6.0) -> dict:
    """Model input (1, 3, 256, 256), liver mask (1, 1, 256, 256) and the liver's box grown by ``margin`` model
    pixels (1, 4) of one AMOS 0013 slab slice (skips without the shared data)."""
    import numpy as np
    import torch

    from organsam.io import load_labels, load_volume
    from organsam.preprocessing.intensity import window_ct
    from organsam.preprocessing.slices import to_model_input

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol)
    x, geom = to_model_input(window_ct(vol.array[slice_index], "abdomen"))
    mask = geom.mask_to_model(np.asarray(lab[slice_index]) == 6)  # AMOS label 6: liver
    ys, xs = np.nonzero(mask)
    assert ys.size > 1000, f"slice {slice_index} should show a large liver section"
    box = torch.tensor(
        [[xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin]], dtype=torch.float32
    ).clamp(0, 255)
    return {"image": torch.from_numpy(x)[None], "mask": torch.from_numpy(mask)[None, None].float(), "box": box}


#: The upper slices of each AMOS slab, where both the liver and the spleen are (file slice axis: the last).
AMOS_TOP = {"amos_0013_slab": slice(6, 11), "amos_0001_slab": slice(5, 10)}


def amos_top_slices(case: str, folder: Path, name: str | None = None) -> tuple[Path, Path]:
    """Write the five upper slices of a real AMOS slab (image and reference labels, the file's own affine) into
    ``folder``; returns (image, labels). Tests of orchestration (batch, entry points) run on these: the same
    pipeline on half the slices. Skips without the shared data."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in ("image", "label"):
        img = nib.load(data_path(case, f"{kind}.nii.gz"))
        path = folder / f"{name or case}{'' if kind == 'image' else '_label'}.nii.gz"
        nib.save(img.slicer[:, :, AMOS_TOP[case]], path)
        out.append(path)
    return out[0], out[1]
