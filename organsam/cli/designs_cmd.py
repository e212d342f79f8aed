"""``organsam designs``: list the model designs; ``--params`` builds each and counts its parameters.

Listing reads each design module's docstring without importing it (no torch); ``--params`` builds the
real designs (pretrained LiteMedSAM core and the organ text table) and reports total and trainable
parameter counts under the preset's freezing options.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("designs", help="list the model designs (and their parameter counts)")
    p.add_argument("names", nargs="*", help="only these designs (default: all)")
    p.add_argument(
        "--params",
        action="store_true",
        help="build each design (pretrained core) and print total / trainable parameter counts",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from organsam.cli.main import CLIError
    from organsam.registry import design_summary, list_designs

    known = list_designs()
    names = args.names or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CLIError(f"unknown design(s) {', '.join(unknown)}; known: {', '.join(known)}")
    rows: list[dict[str, Any]] = []
    for name in names:
        row: dict[str, Any] = {"name": name, "summary": design_summary(name)}
        if args.params:
            from organsam.registry import build_design

            counts = build_design(name).parameter_counts()
            row.update(total_params=counts["total"], trainable_params=counts["trainable"])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if args.params:
            print(
                f"{r['name']:<{width}}  total {r['total_params'] / 1e6:6.2f} M  trainable "
                f"{r['trainable_params'] / 1e6:6.2f} M  {r['summary']}"
            )
        else:
            print(f"{r['name']:<{width}}  {r['summary']}")
    return 0
