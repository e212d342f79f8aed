"""Cost of one mask decode (milliseconds per prompt) in each runtime and precision, and agreement of the masks.

Box prompts of the eight large AMOS 0013 organs (their reference boxes on two slab slices, so P prompts over two
images, as the pipeline decodes a slice's organs in one call) are decoded against real LiteMedSAM embeddings by:

- ``torch`` / ``torch_bf16``: ``SamCore.decode`` (the PyTorch decoder, image side shared per slice), fp32 and
  under bf16 autocast;
- ``openvino`` / ``openvino_bf16``: the pipeline's CPU runtime (:mod:`organsam.model.openvino_sam`, the
  single-mask graph).

Printed per variant: best-of-``--repeat`` milliseconds per prompt, and the share of pixels whose mask agrees
with the ``torch`` fp32 masks.

With ``--chunks``, only the OpenVINO fp32 decoder, given 32 prompts (the boxes repeated) split into calls of each
size in turn (ascending): milliseconds per prompt and the process's peak RSS after that size, which is what
``organsam.inference.decoders.DECODE_CHUNK`` trades (OpenVINO keeps the buffers of the largest call it has run).

    .venv/bin/python bench/decoder_speed.py [--variants torch openvino openvino_bf16] [--repeat 5] [--threads N]
    .venv/bin/python bench/decoder_speed.py --chunks 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from _common import AMOS13, data_dir, model_input

from organsam.io import load_labels, load_volume
from organsam.model.sam_core import build_lite_medsam
from organsam.preprocessing.slices import geometry_for
from organsam.priors import mask_to_boxes

VARIANTS = ("torch", "torch_bf16", "openvino", "openvino_bf16")
ORGANS = ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta", "pancreas")
SLICES = (4, 7)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch / OpenVINO threads (default: torch's choice)")
    ap.add_argument("--chunks", type=int, nargs="+", default=None, help="prompts per OpenVINO call to compare")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    core = build_lite_medsam().eval()
    case = data_dir() / "amos_0013_slab"
    vol = load_volume(case / "image.nii.gz")
    lab = np.asarray(load_labels(case / "label.nii.gz", like=vol))
    values = {oid: AMOS13.index(oid) + 1 for oid in ORGANS}  # AMOS labels 1..13 in AMOS13's order
    images = torch.from_numpy(model_input(vol)[list(SLICES)])
    with torch.inference_mode():
        emb = core.encode(images, keep_levels=False).embedding
    geom_boxes, index = [], []
    geom = geometry_for(vol.array.shape[1:])
    for i, z in enumerate(SLICES):
        for v in values.values():
            b = mask_to_boxes(lab == v, 3).get(z)
            if b is not None:
                geom_boxes.append(geom.box_to_model(tuple(float(c) for c in b)))
                index.append(i)
    boxes = torch.from_numpy(np.stack(geom_boxes)).float()
    image_index = torch.tensor(index)
    print(f"threads {torch.get_num_threads()}, {len(boxes)} box prompts over {len(SLICES)} slices")

    def torch_variant(bf16: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return core.decode(emb, boxes=boxes, image_index=image_index)[0].float()

        return run

    def openvino_variant(precision: str) -> Callable[[], torch.Tensor]:
        from organsam.model.openvino_sam import OpenVinoSam

        ov = OpenVinoSam(core, decoder_precision=precision)
        with torch.inference_mode():
            sparse, _ = core.embed_prompts(boxes=boxes)
        return lambda: ov.decode(emb, sparse, image_index)[0]

    if args.chunks:
        return chunk_sizes(core, emb, boxes, image_index, sorted(args.chunks), args.repeat)
    makers = {
        "torch": lambda: torch_variant(False),
        "torch_bf16": lambda: torch_variant(True),
        "openvino": lambda: openvino_variant("fp32"),
        "openvino_bf16": lambda: openvino_variant("bf16"),
    }
    fns = {v: makers[v]() for v in args.variants}
    ref = (torch_variant(False)() > 0).numpy()
    print(f"{'variant':14s} {'ms/prompt':>9s} {'mask agreement':>15s}")
    for name, fn in fns.items():
        out = fn()  # warm-up (shape-specific kernels)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        agree = float(((out > 0).numpy() == ref).mean())
        print(f"{name:14s} {1000 * best / len(boxes):9.1f} {agree:15.5f}", flush=True)
    return 0


def chunk_sizes(
    core: torch.nn.Module,
    emb: torch.Tensor,
    boxes: torch.Tensor,
    image_index: torch.Tensor,
    chunks: list[int],
    repeat: int,
) -> int:
    """OpenVINO fp32 decoding of 32 prompts in calls of each size of ``chunks`` (ascending): ms per prompt and the
    peak RSS after it."""
    from organsam.model.openvino_sam import OpenVinoSam

    ov = OpenVinoSam(core)
    reps = -(-32 // len(boxes))
    boxes, image_index = boxes.repeat(reps, 1)[:32], image_index.repeat(reps)[:32]
    with torch.inference_mode():
        sparse, _ = core.embed_prompts(boxes=boxes)

    def run(c: int) -> None:
        for i in range(0, len(boxes), c):
            ov.decode(emb, sparse[i : i + c], image_index[i : i + c])

    print(f"{'prompts/call':>12s} {'ms/prompt':>9s} {'peak RSS MB':>11s}")
    for c in chunks:
        run(c)  # warm-up (shape-specific kernels, buffers)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            run(c)
            best = min(best, time.perf_counter() - t0)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(f"{c:12d} {1000 * best / len(boxes):9.1f} {rss:11.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
