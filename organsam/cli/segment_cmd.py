"""``organsam segment``: text-prompted segmentation of a CT/MR file or DICOM folder."""

from __future__ import annotations

import argparse
import json
import sys


def _device(value: str) -> str:
    if value not in ("cpu", "cuda") and not value.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; use cpu, cuda or cuda:N")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment organs named in text",
                       description="Segment organs in a CT/MR volume from a text prompt.")
    p.add_argument("-i", "--input", required=True, help="NIfTI/NRRD/MHA/npz file or DICOM folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--organs", help='free text, e.g. "liver, left kidney, pancreas"')
    g.add_argument("--all", action="store_true", help="segment the default organ set")
    p.add_argument("--design", default="organsam", help="model design (see `organsam designs`)")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint of the design")
    p.add_argument("-d", "--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--modality", choices=["CT", "MR"], default=None, help="override the modality guess")
    p.add_argument("--fast", action="store_true", help="faster, coarser location prior")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from organsam.inference.segment import segment

    result = segment(args.input, args.organs, all_organs=args.all, output=args.output, design=args.design,
                     checkpoint=args.checkpoint, device=args.device, fast=args.fast, quiet=args.quiet,
                     modality=args.modality)
    if not args.quiet:
        rows = result.report["organs"]
        for oid, r in rows.items():
            state = f"{r['volume_ml']:8.1f} mL  conf {r['confidence']:.2f}" if r["present"] else "absent"
            print(f"{oid:<24} {state}")
        print(json.dumps({"output": args.output, "timings_s": result.report["timings_s"]}), file=sys.stderr)
    return 0
