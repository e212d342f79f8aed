"""``organsam`` console script: a thin layer of subcommands over the public API.

Each subcommand lives in its own module of this package exposing ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported when the parser is built, so they must not import torch
at module level (discovery commands such as ``organsam organs`` stay fast).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from organsam import __version__

# subcommand name -> module in organsam.cli
COMMANDS: dict[str, str] = {
    "weights": "organsam.cli.weights_cmd",
    "organs": "organsam.cli.organs_cmd",
    "designs": "organsam.cli.designs_cmd",
    "segment": "organsam.cli.segment_cmd",
    "serve": "organsam.cli.serve_cmd",
    "evaluate": "organsam.cli.evaluate_cmd",
    "train": "organsam.cli.train_cmd",
}


class CLIError(Exception):
    """An error to report to the user as one line, exiting with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="organsam",
        description="Text-prompted organ segmentation of CT and MR volumes.",
    )
    parser.add_argument("--version", action="version", version=f"organsam {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in COMMANDS.values():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # subcommand not built yet in this checkout
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"organsam {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except (FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"organsam {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("organsam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
