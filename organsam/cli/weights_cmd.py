"""``organsam weights``: show which pretrained weight files were found and whether their hashes match."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="find and verify the offline pretrained weights")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from organsam.weights import describe_weights

    rows = describe_weights()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=0)
        for r in rows:
            print(f"{r['name']:<{width}} {r['status']:<15} {r['path']}\n{'':<{width}} licence: {r['licence']}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1
