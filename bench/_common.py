"""Shared helpers of the speed benchmarks: benchmark volumes, the golden Dice protocol, timers, peak memory.

Benchmark cases (all real CT from the shared data folder, ``../shared/data`` or ``$ORGANSAM_DATA``):

- ``amos_0013_slab``: AMOS 0013, 512x512x11 at 0.78x0.78x5 mm, with its manual AMOS labels.
- ``ts_a``: the TotalSegmentator example CT, 122x101x112 at 3 mm, abdomen-pelvis.
- ``stack100``: a 512x512x100 CT made from AMOS 0013's 11 real slices, linearly interpolated along z to
  100 slices (spacing 5 * 10 / 99 = 0.505 mm; the same 50 mm of anatomy, so every slice holds organs:
  the worst case for skipping slices).
- ``ts_a_512``: TS-A resampled (trilinear) to 512x512 in plane and 100 slices (whole abdomen-pelvis,
  3.36 mm slices): a realistic 512x512x100 case where many slices hold none of the prompted organs.
- ``ts_a_300``: the same at 300 slices (1.12 mm): a 300-slice CT, for peak memory.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from organsam.inference.state import InferenceState  # noqa: E402
from organsam.inference.volume_predictor import VolumePredictor  # noqa: E402
from organsam.io import Volume, load_labels, load_volume  # noqa: E402
from organsam.model.sam_core import SamCore  # noqa: E402
from organsam.preprocessing.intensity import window_ct  # noqa: E402
from organsam.preprocessing.slices import to_model_input_batch  # noqa: E402

#: The 13 AMOS abdominal organs (AMOS labels 1..13; bladder and prostate/uterus left out).
AMOS13 = [
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "pancreas",
    "adrenal_gland_right",
    "adrenal_gland_left",
    "duodenum",
]
CASES = ("amos_0013_slab", "ts_a", "stack100", "ts_a_512", "ts_a_300")


def data_dir() -> Path:
    """The shared data folder (``$ORGANSAM_DATA`` or ``../shared/data`` next to the repository)."""
    return Path(os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))


def _resample_z_linear(array: np.ndarray, n: int) -> np.ndarray:
    """(Z, Y, X) -> (n, Y, X) by linear interpolation between neighbouring slices (end slices kept)."""
    z = np.linspace(0.0, array.shape[0] - 1, n)
    lo = np.floor(z).astype(int)
    hi = np.minimum(lo + 1, array.shape[0] - 1)
    w = (z - lo).astype(np.float32)[:, None, None]
    return (array[lo] * (1 - w) + array[hi] * w).astype(np.float32)


def load_case(name: str) -> tuple[Volume, str]:
    """A benchmark volume (canonical layout) and a one-line description of how it was made.

    Args:
        name: one of :data:`CASES`.

    Returns:
        The volume and its description.
    """
    data = data_dir()
    if name == "amos_0013_slab":
        vol = load_volume(data / "amos_0013_slab" / "image.nii.gz")
        return vol, "AMOS 0013 slab as stored"
    if name == "ts_a":
        vol = load_volume(data / "ts_a" / "image.nii.gz")
        return vol, "TS-A as stored"
    if name == "stack100":
        src = load_volume(data / "amos_0013_slab" / "image.nii.gz")
        arr = _resample_z_linear(src.array, 100)
        sz = src.spacing[0] * (src.array.shape[0] - 1) / 99.0
        vol = Volume.from_array(arr, (sz, src.spacing[1], src.spacing[2]), "CT")
        return vol, "AMOS 0013's 11 real slices linearly interpolated along z to 100 (512x512x100)"
    if name in ("ts_a_512", "ts_a_300"):
        import torch.nn.functional as F

        n = 100 if name == "ts_a_512" else 300
        src = load_volume(data / "ts_a" / "image.nii.gz")
        t = torch.from_numpy(np.ascontiguousarray(src.array))[None, None]
        arr = F.interpolate(t, size=(n, 512, 512), mode="trilinear", align_corners=False)[0, 0].numpy()
        Z, Y, X = src.array.shape
        spacing = (src.spacing[0] * Z / n, src.spacing[1] * Y / 512, src.spacing[2] * X / 512)
        return Volume.from_array(
            np.ascontiguousarray(arr, dtype=np.float32), spacing, "CT"
        ), f"TS-A resampled trilinearly to 512x512x{n}"
    raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASES)}")


def model_input(volume: Volume) -> np.ndarray:
    """(Z, 3, 256, 256) float32 model inputs of every slice (abdomen window)."""
    return to_model_input_batch(window_ct(volume.array, "abdomen"))[0]


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def golden_dice(
    model: SamCore,
    encode: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
    decode_bf16: bool = False,
) -> dict[str, float]:
    """Per-organ 3D Dice on the AMOS 0013 slab with tight per-slice reference boxes (the golden protocol of
    ``tests/model/test_model_golden.py``), embeddings from ``encode``.

    Args:
        model: the SAM core whose decoder is used.
        encode: (B, 3, 256, 256) -> (B, 256, 64, 64) embeddings.
        device: where the model lives.
        decode_bf16: run the mask decoder under bfloat16 autocast.

    Returns:
        organ id -> Dice, for the AMOS organs 1..13 present in the slab.
    """
    data = data_dir() / "amos_0013_slab"
    vol = load_volume(data / "image.nii.gz")
    labels = np.asarray(load_labels(data / "label.nii.gz", like=vol))
    x, geom = to_model_input_batch(window_ct(vol.array, "abdomen"))
    values = {v: AMOS13[v - 1] for v in range(1, 14)}
    pred = {v: np.zeros(labels.shape, dtype=bool) for v in values}
    with torch.inference_mode():
        for z in range(labels.shape[0]):
            present = [v for v in values if (labels[z] == v).any()]
            if not present:
                continue
            emb = encode(torch.from_numpy(x[z : z + 1]).to(device)).float()
            boxes = []
            for v in present:
                ys, xs = np.nonzero(labels[z] == v)
                boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=decode_bf16):
                logits, _ = model.decode(emb, boxes=torch.from_numpy(geom.box_to_model(np.array(boxes))).to(device))
            full = (geom.logits_to_original(logits[:, 0].float()) > 0).cpu().numpy()
            for j, v in enumerate(present):
                pred[v][z] = full[j]
    out = {}
    for v, name in values.items():
        gt = labels == v
        if gt.any():
            out[name] = float(2 * (gt & pred[v]).sum() / (gt.sum() + pred[v].sum()))
    return out


class CachedPredictor(VolumePredictor):
    """A VolumePredictor whose sessions on the same volume share one slice-embedding cache."""

    def __init__(self, *args: Any, cache: dict[int, dict[int, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache = cache

    def init_state(self, volume: Volume) -> InferenceState:
        state = super().init_state(volume)
        state.embeddings = self._cache.setdefault(id(volume), {})
        return state
