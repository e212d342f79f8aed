"""``organsam segment``: text-prompted segmentation of a CT/MR file or DICOM folder, or of many volumes
(a folder of volumes or a manifest) with local workers or on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from organsam.inference.predictor_factory import DEFAULT_DESIGN
from organsam.inference.runtimes import RUNTIMES


def _device(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment organs named in text",
        description="Segment organs in a CT/MR volume, or in every volume of a folder or manifest, from a text prompt.",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        type=_path,
        help="NIfTI/NRRD/MHA/npz file or DICOM folder; or, for a batch, a folder of volumes "
        "(files and DICOM series subfolders) or a .csv/.json/.txt manifest of paths",
    )
    p.add_argument("-o", "--output", required=True, type=_path, help="output folder (batch: one subfolder per case)")
    p.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="the DICOM series to read when the input folder holds several (SeriesInstanceUID)",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--organs", help='free text, e.g. "liver, left kidney, pancreas"')
    g.add_argument("--all", action="store_true", help="segment the default organ set")
    p.add_argument(
        "--design",
        default=DEFAULT_DESIGN,
        help=f"{DEFAULT_DESIGN} (default: the shipped pipeline, LiteMedSAM placed by the atlas prior) or a trained "
        "research design (see `organsam designs`) given with --checkpoint",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a design checkpoint written by `organsam train` (model.safetensors with its model.json), "
        "'packaged' for the design's shipped checkpoint (the default for a design that ships one), "
        "or a SAM-family .pth (LiteMedSAM layout) for the default pipeline's core",
    )
    p.add_argument(
        "--design-prompts",
        choices=["prior", "text"],
        default=None,
        help="with a design checkpoint: 'prior' gives the design the atlas prior's box on each slice "
        "with the organ, 'text' asks it on every slice with the text alone (default: text for the prompt-free "
        "designs pg_sam and seg_sam, which segment every organ in one pass; prior for the others)",
    )
    p.add_argument(
        "-d",
        "--device",
        type=_device,
        default="auto",
        help="auto (default: the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    p.add_argument("--modality", choices=["CT", "MR"], default=None, help="override the modality guess")
    p.add_argument(
        "--fast",
        action="store_true",
        help="faster, approximate: coarser location prior, bfloat16 encoder and decoder where the CPU/GPU runs "
        "it natively (lower Dice: 78.98 against 82.12 mean on our validation slabs, see README 'Speed')",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the LiteMedSAM core: auto (default: OpenVINO on the CPU, faster with the same masks to "
        "float rounding, see README 'Speed'; PyTorch on a GPU or where OpenVINO is missing), torch or openvino",
    )
    p.add_argument(
        "--min-slice-mm",
        type=float,
        default=None,
        metavar="MM",
        help="segment thinner-sliced volumes on slices this far apart and interpolate the masks "
        "back: faster on thin-slice CTs, approximate (default 0 = every input slice)",
    )
    p.add_argument(
        "--organ-prompts",
        default=None,
        metavar="packaged|PATH",
        help="add learned organ prompt tokens to the atlas/user boxes: 'packaged' for the table shipped "
        "in the package (trained on ../shared/data), or a table exported by "
        "`organsam prompts export`; default off (plain LiteMedSAM boxes: "
        "the tokens did not help on the held-out validation CT, see README)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    b = p.add_argument_group("batch (when -i is a folder of volumes or a manifest)")
    b.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="local worker processes (default 1); with --ray: actors (default one per GPU/CPU)",
    )
    b.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster: its address, 'auto' (a running cluster) or 'local' "
        "(start one here); needs `pip install 'organsam[ray]'`",
    )
    b.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip volumes finished earlier with unchanged input, prompt and outputs (default: on)",
    )
    p.set_defaults(func=run)


def _path(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder (use . for the current folder)")
    return value


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return n


def _organ_prompts(value: str | None) -> str | bool:
    """``--organ-prompts``: None/'off' -> none, 'packaged' -> the packaged table, else a path."""
    if value is None or value.lower() in ("off", "none", "false", "0"):
        return False
    return True if value.lower() in ("packaged", "default", "on") else value


def run_batch_cmd(args: argparse.Namespace) -> int:
    """Batch mode: segment every volume of a folder or manifest; exit 1 when any volume failed."""
    from organsam.inference.batch import run_batch

    if args.design_prompts is not None or _organ_prompts(args.organ_prompts):
        raise ValueError(
            "--design-prompts text and --organ-prompts apply to one volume at a time; batches run "
            "with the defaults (segment each volume on its own to use them)"
        )
    summary = run_batch(
        args.input,
        args.organs,
        args.output,
        all_organs=args.all,
        workers=args.workers,
        ray=args.ray,
        resume=args.resume,
        design=args.design,
        checkpoint=args.checkpoint,
        device=args.device,
        fast=args.fast,
        modality=args.modality,
        runtime=args.runtime,
        progress=not args.quiet,
    )
    if args.quiet:
        for c in summary.cases:
            if c.state == "failed":
                print(f"failed {c.case_id}: {c.message}", file=sys.stderr)
    else:
        print(summary.format())
    return summary.exit_code


def run(args: argparse.Namespace) -> int:
    from organsam.inference.batch import is_batch_input

    if is_batch_input(args.input):
        return run_batch_cmd(args)
    if args.ray is not None or (args.workers or 1) > 1:
        logging.getLogger(__name__).warning(
            "--workers/--ray apply to batches (a folder of volumes or a manifest); %s is one volume", args.input
        )
    from organsam.inference.segment import segment

    result = segment(
        args.input,
        args.organs,
        all_organs=args.all,
        output=args.output,
        design=args.design,
        checkpoint=args.checkpoint,
        device=args.device,
        fast=args.fast,
        quiet=args.quiet,
        modality=args.modality,
        **({} if args.min_slice_mm is None else {"min_slice_mm": args.min_slice_mm}),
        organ_prompts=_organ_prompts(args.organ_prompts),
        design_prompts=args.design_prompts,
        series_uid=args.series_uid,
        runtime=args.runtime,
    )
    if not args.quiet:
        rows = result.report["organs"]
        for oid, r in rows.items():
            if r["present"]:
                state = f"{r['volume_ml']:8.1f} mL  conf {r['confidence']:.2f}"
            else:
                state = {
                    "absent": "absent (searched)",
                    "not_locatable": "not located: give a box",
                    "rejected_by_verification": "rejected by verification (see report.json)",
                }[r["status"]]
            print(f"{oid:<24} {state}")
        print(json.dumps({"output": args.output, "timings_s": result.report["timings_s"]}), file=sys.stderr)
    return 0
