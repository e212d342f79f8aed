"""``organsam prompts export``: the organ prompt table of a trained ``organ_prompts`` checkpoint.

    organsam prompts export runs/organ_prompts/model.safetensors table.safetensors [--compare-to packaged]

What ``scripts/train_default.sh`` runs after training (see :mod:`organsam.inference.organ_prompt_table`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prompts",
        help="export learned organ prompt tokens",
        description="Organ prompt tables: the learned tokens per organ that --organ-prompts adds to the box prompts.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = actions.add_parser(
        "export",
        help="export the table of a trained organ_prompts checkpoint",
        description="Export the organ prompt table of a trained organ_prompts checkpoint.",
    )
    e.add_argument("checkpoint", type=Path, help="trained checkpoint (runs/organ_prompts/model.safetensors)")
    e.add_argument("out", type=Path, help="table file to write (e.g. organsam/assets/organ_prompts.safetensors)")
    e.add_argument("--command", dest="train_command", default="", help="the training command, stored as provenance")
    e.add_argument(
        "--compare-to",
        default=None,
        metavar="TABLE",
        help="after exporting, print how far the new table is from TABLE ('packaged': the shipped one)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from organsam.inference.organ_prompt_table import compare_tables, export_prompt_table, load_prompt_table

    out = export_prompt_table(args.checkpoint, args.out, args.train_command)
    if args.compare_to:
        ref = load_prompt_table(None if args.compare_to == "packaged" else args.compare_to)
        d = compare_tables(ref, load_prompt_table(out))
        print(
            f"{out} vs {ref.path}: {int(d['organs'])} organs, max |token difference| {d['max_abs']:.3g} "
            f"({d['rel']:.2%} of the largest token)"
        )
    else:
        print(out)
    return 0
