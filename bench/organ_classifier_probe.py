"""Probe: can a mask-level organ classifier (SEG-SAM's semantic classification) tell which organ a mask is?

Issue 14 asks for a verifier over mask-pooled encoder features. This probe measures whether one, trained on the data
that may ship (``ts_a`` and ``ts_b``, Apache-2.0), judges masks on the AMOS slabs it never saw; and, leave one
patient out, with the other AMOS slab added to training.

Samples, per labelled slice and organ: the reference mask, and LiteMedSAM masks decoded from its box (8 mm margin)
and from 3 boxes moved by up to 25 mm (labelled by the reference organ holding at least half of the mask: the
decoder's own confusions are the hard negatives). Features of a mask: the LiteMedSAM embedding pooled inside it and in
a ring around it, HU percentiles inside it, its area and its place relative to the body outline. Classifier:
multinomial logistic regression (L2, class-balanced). Printed per feature set and split: accuracy on reference
masks, and for decoded masks prompted as organ X the share of correct masks kept (probability of X >= 0.2 or X the
most likely class) and of masks of another organ rejected.

    .venv/bin/python bench/organ_classifier_probe.py [--cache runs/organ_classifier_samples]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organsam.inference.state import DecodeJob  # noqa: E402
from organsam.inference.volume_predictor import VolumePredictor  # noqa: E402
from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.preprocessing.slices import SliceGeometry  # noqa: E402
from organsam.priors.boxes import box_of_slice  # noqa: E402
from organsam.vocabulary import labelmap_info  # noqa: E402

CASES = {
    "ts_a": ("ts_a/image.nii.gz", "ts_a/label_ts_v2_fast.nii.gz", "totalsegmentator_v2"),
    "ts_b": ("ts_b_dicom/dicom", "ts_b_dicom/label_ts_v2.nii.gz", "totalsegmentator_v2"),
    "amos_0001": ("amos_0001_slab/image.nii.gz", "amos_0001_slab/label.nii.gz", "amos22"),
    "amos_0013": ("amos_0013_slab/image.nii.gz", "amos_0013_slab/label.nii.gz", "amos22"),
}
CLASSES = [
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "liver",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "pancreas",
    "adrenal_gland_right",
    "adrenal_gland_left",
    "duodenum",
    "urinary_bladder",
]

#: the parts of a feature vector, in order, and their sizes
FEATURE_GROUPS: dict[str, int] = {"embedding_inside": 256, "embedding_ring": 256, "intensity": 6, "shape": 7}
#: HU window of the intensity features (values outside are clipped)
_HU_RANGE = (-250.0, 350.0)
#: ring width around the mask, in model pixels (256-pixel input; 4 model pixels = one embedding cell)
_RING_PX = 12


def body_box(hu: np.ndarray, threshold: float = -400.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) box of the body on a CT slice (pixels above ``threshold`` HU; rows and columns holding at
    least 2 % of the longest run, so the table and stray pixels do not count); the whole slice when nothing is."""
    body = hu > threshold
    Y, X = body.shape
    rows, cols = body.sum(1), body.sum(0)
    ys = np.flatnonzero(rows >= max(1, 0.02 * rows.max(initial=0)))
    xs = np.flatnonzero(cols >= max(1, 0.02 * cols.max(initial=0)))
    if not rows.any() or ys.size == 0 or xs.size == 0:
        return 0, 0, X - 1, Y - 1
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def _pooled(embedding: torch.Tensor, weight: np.ndarray) -> np.ndarray:
    """Mean of the (C, 64, 64) embedding under a (256, 256) weight map pooled to the embedding grid."""
    w = torch.from_numpy(weight.astype(np.float32))[None, None]
    cells = F.avg_pool2d(w, kernel_size=weight.shape[0] // embedding.shape[-1])[0, 0]
    total = float(cells.sum())
    if total <= 0:
        return np.zeros(embedding.shape[0], dtype=np.float32)
    return ((embedding.float() * cells).sum((1, 2)) / total).numpy()


def mask_features(
    embedding: torch.Tensor,
    geometry: SliceGeometry,
    hu: np.ndarray,
    mask: np.ndarray,
    spacing_yx: tuple[float, float],
    body: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Feature vector of one mask on one slice.

    Args:
        embedding: (256, 64, 64) LiteMedSAM image embedding of the slice.
        geometry: how the slice maps onto the model input.
        hu: (Y, X) slice in HU.
        mask: (Y, X) bool, not empty.
        spacing_yx: in-plane pixel spacing (sy, sx) in mm.
        body: the slice's :func:`body_box` (computed when not given).

    Returns:
        float32 vector of :func:`feature_size` values (:data:`FEATURE_GROUPS` in order).
    """
    if not mask.any():
        raise ValueError("mask_features needs a non-empty mask")
    inside = geometry.mask_to_model(mask)
    if not inside.any():  # smaller than half a model pixel: keep the pixel holding its centre
        inside = np.zeros_like(inside)
        yy, xx = np.nonzero(mask)
        s = geometry.scale
        inside[min(int(yy.mean() * s), geometry.size - 1), min(int(xx.mean() * s), geometry.size - 1)] = True
    grown = (
        F.max_pool2d(torch.from_numpy(inside.astype(np.float32))[None, None], 2 * _RING_PX + 1, 1, _RING_PX)[
            0, 0
        ].numpy()
        > 0
    )
    ring = grown & ~inside
    h, w = geometry.resized_shape
    ring[h:, :] = False
    ring[:, w:] = False

    values = np.clip(hu[mask].astype(np.float32), *_HU_RANGE)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    intensity = np.array([values.mean(), values.std(), p10, p50, p90, (values < -50).mean() * 100.0]) / 100.0

    sy, sx = spacing_yx
    x0, y0, x1, y1 = body if body is not None else body_box(hu)
    bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    yy, xx = np.nonzero(mask)
    area_cm2 = mask.sum() * sy * sx / 100.0
    shape = np.array(
        [
            np.log1p(area_cm2),
            (xx.mean() - x0) / bw,
            (yy.mean() - y0) / bh,
            (xx.max() - xx.min() + 1) / bw,
            (yy.max() - yy.min() + 1) / bh,
            bw * sx / 300.0,
            bh * sy / 300.0,
        ]
    )
    return np.concatenate([_pooled(embedding, inside), _pooled(embedding, ring), intensity, shape]).astype(np.float32)


def case_samples(
    case: str, data: Path, predictor: VolumePredictor, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Features and (prompted organ, true label, kind) of every sample of one case."""
    img, lab, labelmap = CASES[case]
    vol = load_volume(data / img)
    ref = load_labels(data / lab, vol)
    names = {int(v): o for v, o in labelmap_info(labelmap).organs.items()}
    state = predictor.init_state(vol)
    sy, sx = vol.spacing[1], vol.spacing[2]
    step = 2 if vol.array.shape[0] > 60 else 1
    feats, meta = [], []
    for z in range(0, vol.array.shape[0], step):
        r = ref[z]
        values = [int(v) for v in np.unique(r) if v and int(v) in names and (r == v).sum() * sy * sx >= 100]
        if not values:
            continue
        predictor.encode_slices(state, [z])
        emb, hu = state.embeddings[z].float(), vol.array[z].astype(np.float32)
        body = body_box(hu)
        jobs = []
        for v in values:
            m = r == v
            feats.append(mask_features(emb, state.geometry, hu, m, (sy, sx), body))
            meta.append((names[v], names[v], "reference"))
            b = box_of_slice(m, int(round(8 / min(sy, sx))))
            if b is None:
                continue
            x0, y0, x1, y1 = (float(t) for t in b)
            jobs.append(DecodeJob(z, names[v], (x0, y0, x1, y1), None))
            H, W = r.shape
            for _ in range(3):
                dx, dy = rng.uniform(-25, 25, 2) / (sx, sy)
                moved = (
                    min(max(x0 + dx, 0), W - 2),
                    min(max(y0 + dy, 0), H - 2),
                    min(max(x1 + dx, 1), W - 1),
                    min(max(y1 + dy, 1), H - 1),
                )
                if moved[2] - moved[0] > 3 and moved[3] - moved[1] > 3:
                    jobs.append(DecodeJob(z, names[v], tuple(float(t) for t in moved), None))
        for job, (m, _) in zip(jobs, predictor.decode(state, jobs)):
            if m.sum() < 10:
                continue
            inside = {
                names.get(int(v), "other") if v else "background": (m & (r == v)).sum() / m.sum()
                for v in np.unique(r[m])
            }
            best = max(inside, key=inside.__getitem__)
            feats.append(mask_features(emb, state.geometry, hu, m, (sy, sx), body))
            meta.append((job.organ_id, best if inside[best] >= 0.5 else "mixed", "decoded"))
    return np.stack(feats), np.array(meta, dtype=object)


def target(meta: np.ndarray) -> np.ndarray:
    return np.array([m[1] if m[1] in CLASSES else ("skip" if m[1] == "mixed" else "other") for m in meta])


def fit(x: np.ndarray, y: np.ndarray, classes: list[str], l2: float) -> tuple:
    mu, sd = x.mean(0), x.std(0) + 1e-3
    xt = torch.tensor((x - mu) / sd)
    yt = torch.tensor([classes.index(c) for c in y])
    counts = np.bincount(yt.numpy(), minlength=len(classes))
    weight = torch.tensor(1.0 / np.maximum(counts, 1), dtype=torch.float32)
    w = torch.zeros(x.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt, weight=weight / weight.mean()) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, w.detach(), b.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--cache", default=str(REPO / "runs" / "organ_classifier_samples"))
    ap.add_argument("--l2", type=float, default=1e-2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    predictor = VolumePredictor(progress=False, prior=None)
    samples = {}
    for case in CASES:
        f = cache / f"{case}.npz"
        if not f.exists():
            x, meta = case_samples(case, Path(args.data), predictor, np.random.default_rng(0))
            np.savez(f, x=x, meta=meta)
        d = np.load(f, allow_pickle=True)
        samples[case] = (d["x"], d["meta"])
    edges = np.cumsum([0, *FEATURE_GROUPS.values()])
    cols = {name: np.arange(edges[i], edges[i + 1]) for i, name in enumerate(FEATURE_GROUPS)}
    sets = {
        "embedding inside": ["embedding_inside"],
        "intensity + shape": ["intensity", "shape"],
        "all": list(FEATURE_GROUPS),
    }
    splits = [
        (["ts_a", "ts_b"], ["amos_0013", "amos_0001"]),
        (["ts_a", "ts_b", "amos_0001"], ["amos_0013"]),
        (["ts_a", "ts_b", "amos_0013"], ["amos_0001"]),
    ]
    out = [
        "## Organ classifier probe (mask-pooled features, logistic regression)",
        "",
        f"Command: `python bench/organ_classifier_probe.py {' '.join(sys.argv[1:])}`  ",
        "Shares in %; 'kept': decoded masks of the organ prompted that the classifier accepts; 'rejected': decoded "
        "masks of another organ that it refuses.",
        "",
        "| features | trained on | scored on | reference masks classified right | correct masks kept | "
        "neighbour masks rejected | n correct / n neighbour |",
        "|:---|:---|:---|---:|---:|---:|---:|",
    ]
    for set_name, groups in sets.items():
        use = np.concatenate([cols[g] for g in groups])
        for train, test in splits:
            x = np.concatenate([samples[c][0] for c in train])[:, use]
            y = target(np.concatenate([samples[c][1] for c in train]))
            keep = y != "skip"
            classes = sorted(set(y[keep]))
            mu, sd, w, b = fit(x[keep], y[keep], classes, args.l2)
            xt = np.concatenate([samples[c][0] for c in test])[:, use]
            meta = np.concatenate([samples[c][1] for c in test])
            yt = target(meta)
            p = torch.softmax(torch.tensor((xt - mu) / sd) @ w + b, 1).numpy()
            pred = np.array(classes)[p.argmax(1)]
            ref = (meta[:, 2] == "reference") & (yt != "skip")
            dec = (meta[:, 2] == "decoded") & np.isin(meta[:, 0], classes)
            good = dec & (meta[:, 1] == meta[:, 0])
            bad = dec & (meta[:, 1] != meta[:, 0]) & (meta[:, 1] != "mixed")
            p_asked = np.array(
                [p[i, classes.index(meta[i, 0])] if meta[i, 0] in classes else 0.0 for i in range(len(meta))]
            )
            accept = (p_asked >= 0.2) | (pred == meta[:, 0])
            out.append(
                f"| {set_name} | {', '.join(train)} | {', '.join(test)} | {100 * (pred == yt)[ref].mean():.0f} "
                f"| {100 * accept[good].mean():.0f} | {100 * (~accept[bad]).mean():.0f} "
                f"| {good.sum()} / {bad.sum()} |"
            )
    out.append(f"\nTotal {time.perf_counter() - t0:.0f} s (samples cached in {cache}).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
