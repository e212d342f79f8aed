"""Probe: does PG-SAM's prior aligner locate organs from their descriptions on a CT it never saw?

PG-SAM's aligner turns the similarity between an organ's description sentences and each image-embedding pixel into a
guide map (``organsam.model.components.prior_aligner``). This probe trains the aligner alone, on its guide loss
(0.2 BCE + 0.8 Dice at 64x64 over every organ each slice labels), over the frozen LiteMedSAM embeddings of the
training split (``ts_a``, ``ts_b``, ``amos_0001`` and the contrast-phase copies of the unenhanced ones, as
``train_pg_sam.yaml``), and scores the guide (logit > 0, upsampled to 256x256) per organ on every slice of
``amos_0013`` (never trained on); ``--holdout amos_0001`` swaps the two AMOS CTs (leave one patient out).
Variants: per pixel (``context_layers 0``, as PG-SAM) and with spatial context
(a position code and residual dilated convolutions, ``context_layers 4``).

    .venv/bin/python bench/prior_aligner_probe.py [--steps 500] [--context 0 4] [--holdout amos_0001]

The embeddings come from the training feature cache (``runs/feature_cache``; slices missing there are encoded).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import data_dir  # noqa: E402
from organsam.model.components.prior_aligner import PriorAligner  # noqa: E402
from organsam.model.losses import UNKNOWN, downsample_target, labelled_bce_dice_loss  # noqa: E402
from organsam.preprocessing.slices import to_model_input_batch  # noqa: E402
from organsam.registry import build_design  # noqa: E402
from organsam.training.case_store import CaseStore  # noqa: E402
from organsam.training.contrast_phases import contrast_phase_cases  # noqa: E402
from organsam.training.datasets import read_dataset  # noqa: E402
from organsam.training.feature_cache import FeatureCache  # noqa: E402

ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "aorta", "pancreas"]


def slice_targets(store: CaseStore, ci: int, z: int) -> np.ndarray:
    """(K, 256, 256) model-space targets of one slice, UNKNOWN where the case does not label the organ."""
    _, geom = to_model_input_batch(np.zeros((1, *store.slice_shape(ci)), np.float32))
    out = np.full((len(store.organ_ids), 256, 256), UNKNOWN, np.float32)
    for k in np.nonzero(store.known[ci])[0]:
        out[k] = geom.mask_to_model(store.organ_mask(ci, z, int(k)))
    return out


def low_res_targets(store: CaseStore, ci: int, z: int) -> torch.Tensor:
    """(K, 64, 64) float16 guide targets of one slice (area fractions; UNKNOWN channels kept)."""
    target = torch.from_numpy(slice_targets(store, ci, z))[None]
    known = target[:, :, :1, :1] != UNKNOWN
    return downsample_target(target.clamp(min=0), 64).masked_fill(~known, UNKNOWN)[0].half()


def embeddings(model: torch.nn.Module, store: CaseStore, cache: FeatureCache | None) -> tuple[torch.Tensor, list]:
    """Embeddings of every slice of the store on which a labelled organ lies, and their (case index, z)."""
    rows, keys = [], []
    for ci, case in enumerate(store.cases):
        for z in np.nonzero(store.areas[ci].sum(1) > 0)[0]:
            imgs, _ = to_model_input_batch(np.stack([store.image_slice(ci, int(z))]))
            x = torch.from_numpy(imgs)
            with torch.no_grad():
                enc = cache.get(model, x, [(case.case_id, int(z))]) if cache else model.encode_plain(x)
            rows.append(enc.embedding[0].float())
            keys.append((ci, int(z)))
    return torch.stack(rows), keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--context", type=int, nargs="+", default=[0, 4], help="context layers of each variant")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache", default=str(REPO / "runs" / "feature_cache"))
    ap.add_argument(
        "--holdout",
        default="amos_0013",
        choices=["amos_0013", "amos_0001"],
        help="the AMOS CT scored (the other one trains with ts_a and ts_b; default amos_0013, as train_pg_sam.yaml)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    root = data_dir()
    model = build_design("pg_sam").eval()
    cases = read_dataset("shared", str(root))
    other = "amos_0001" if args.holdout == "amos_0013" else "amos_0013"
    train = [c for c in cases if c.case_id in ("ts_a", "ts_b", other)]
    train += contrast_phase_cases(train, ["arterial", "portal"], 0)
    store = CaseStore(train, model.organ_ids, window="abdomen")
    val = CaseStore([c for c in cases if c.case_id == args.holdout], model.organ_ids, window="abdomen")
    cache = FeatureCache(args.cache, model, "float32", tag="abdomen|to_model_input")
    t0 = time.time()
    X, keys = embeddings(model, store, cache)
    VX, vkeys = embeddings(model, val, None)
    idx = [model.organ_ids.index(o) for o in ORGANS]
    VY = np.stack([slice_targets(val, ci, z)[idx] > 0 for ci, z in vkeys])
    print(f"{X.shape[0]} training slices, {VX.shape[0]} {args.holdout} slices ({time.time() - t0:.0f} s)", flush=True)
    Y = torch.stack([low_res_targets(store, ci, z) for ci, z in keys])
    text = (model.name_emb, model.knowledge_emb, model.knowledge_mask)
    rows = []
    for layers in args.context:
        torch.manual_seed(0)
        aligner = PriorAligner(model.text_dim, 256, 128, context_layers=layers)
        opt = torch.optim.AdamW(aligner.parameters(), lr=5e-4, weight_decay=0.01)
        gen = torch.Generator().manual_seed(0)
        t0 = time.time()
        for step in range(1, args.steps + 1):
            b = torch.randint(0, X.shape[0], (args.batch,), generator=gen)
            low = Y[b].float()
            for group in opt.param_groups:
                group["lr"] = 5e-4 * min(1.0, step / 50) * 0.5 * (1 + np.cos(np.pi * step / args.steps))
            loss = labelled_bce_dice_loss(aligner(X[b], *text).logits, low)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            guide = F.interpolate(aligner(VX, *text).logits[:, idx], size=(256, 256), mode="bilinear") > 0
        guide = guide.numpy()
        dice = [
            2 * (guide[:, j] & VY[:, j]).sum() / max(guide[:, j].sum() + VY[:, j].sum(), 1) for j in range(len(idx))
        ]
        took = time.time() - t0
        rows.append((layers, dice, took))
        print(
            f"context_layers {layers}: mean of liver, spleen, kidneys {np.mean(dice[:4]):.3f} ({took:.0f} s)",
            flush=True,
        )
    what = f"{args.holdout} (all {VX.shape[0]} slices), aligner alone, {args.steps} steps of {args.batch}"
    print(f"\nguide Dice on {what}:\n")
    print("| context layers | " + " | ".join(ORGANS) + " | mean (liver, spleen, kidneys) |")
    print("|---:|" + "---:|" * (len(ORGANS) + 1))
    for layers, dice, _ in rows:
        print(f"| {layers} | " + " | ".join(f"{d:.3f}" for d in dice) + f" | {np.mean(dice[:4]):.3f} |")


if __name__ == "__main__":
    main()
