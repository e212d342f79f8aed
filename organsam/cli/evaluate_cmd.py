"""``organsam evaluate``: Dice / HD95 / NSD of predictions against reference labels (published protocols).

organsam evaluate --pred OUT --ref label.nii.gz --ref-labelmap amos22 --protocol synapse8 -o DIR
"""

from __future__ import annotations

import argparse
import sys

# kept here (not imported from organsam.evaluation) so that building the parser stays light
_PROTOCOLS = ("synapse8", "btcv13", "amos15", "word16", "flare13")
_RULES = ("strict", "transunet", "monai")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against reference labels (Dice, HD95, NSD)",
        description="Score predictions against reference label maps under a published protocol. Prints "
        "Markdown tables (rows = cases, columns = organs + mean); with -o also writes "
        "evaluation.md/.csv/.json and per-organ bar charts (dice.png, hd95.png, nsd.png).",
    )
    p.add_argument(
        "--pred",
        nargs="+",
        help="organsam output folder(s), folder(s) of <organ>.nii.gz masks, "
        "label file(s), or one folder with one of those per case",
    )
    p.add_argument(
        "--ref", nargs="+", help="reference label file(s), or a folder of <case>.nii.gz / <case>/label.nii.gz"
    )
    p.add_argument(
        "--protocol",
        default="synapse8",
        choices=_PROTOCOLS,
        help="published protocol (organs, empty-case rule); default synapse8",
    )
    p.add_argument(
        "--ref-labelmap",
        default=None,
        help="label map of the references: packaged name (amos22, "
        "btcv, synapse, word, flare22, ...) or a json file; default: the protocol's",
    )
    p.add_argument(
        "--pred-labelmap",
        default=None,
        help="label map of prediction label files (organsam output folders carry theirs in report.json)",
    )
    p.add_argument(
        "--image",
        nargs="+",
        default=None,
        help="the image(s) the references belong to (optional; default: the reference file's own grid)",
    )
    p.add_argument("--empty", choices=_RULES, default=None, help="empty-mask rule; default: the protocol's")
    p.add_argument("--hd95-unit", choices=["mm", "voxels"], default="mm", help="HD95 unit (default mm)")
    p.add_argument(
        "--pred-source",
        choices=["auto", "labelmap", "masks"],
        default="auto",
        help="for output folders: segmentation.nii.gz (labelmap) or masks/ (per-organ, unmerged)",
    )
    p.add_argument("--method", default="organsam", help="name of the evaluated method in tables")
    p.add_argument("-o", "--output", default=None, help="folder for evaluation.md/.csv/.json and the charts")
    p.add_argument("--describe", action="store_true", help="print the protocol's conventions and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from organsam.cli.main import CLIError
    from organsam.evaluation import evaluate, get_protocol

    if args.describe:
        print(get_protocol(args.protocol).describe(args.hd95_unit, args.empty))
        return 0
    if not args.pred or not args.ref:
        raise CLIError("give --pred and --ref (or --describe)")
    pred = args.pred[0] if len(args.pred) == 1 else args.pred
    ref = args.ref[0] if len(args.ref) == 1 else args.ref
    image = None if args.image is None else (args.image[0] if len(args.image) == 1 else args.image)
    result = evaluate(
        pred,
        ref,
        args.protocol,
        ref_labelmap=args.ref_labelmap,
        pred_labelmap=args.pred_labelmap,
        image=image,
        empty=args.empty,
        hd95_unit=args.hd95_unit,
        method=args.method,
        pred_source=args.pred_source,
        output=args.output,
    )
    print(result.to_markdown())
    if args.output:
        print(
            f"written to {args.output}: evaluation.md, evaluation.csv, evaluation.json, dice.png, hd95.png, nsd.png",
            file=sys.stderr,
        )
    return 0
