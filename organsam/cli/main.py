"""``organsam`` console script: a thin layer of subcommands over the public API.

Each subcommand lives in its own module of this package exposing ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported when the parser is built, so they must not import torch
at module level (discovery commands such as ``organsam organs`` stay fast).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import NoReturn

from organsam import __version__

# subcommand name -> module in organsam.cli
COMMANDS: dict[str, str] = {
    "weights": "organsam.cli.weights_cmd",
    "atlas": "organsam.cli.atlas_cmd",
    "organs": "organsam.cli.organs_cmd",
    "designs": "organsam.cli.designs_cmd",
    "segment": "organsam.cli.segment_cmd",
    "serve": "organsam.cli.serve_cmd",
    "evaluate": "organsam.cli.evaluate_cmd",
    "prompts": "organsam.cli.prompts_cmd",
    "train": "organsam.cli.train_cmd",
}


class CLIError(Exception):
    """An error to report to the user as one line, exiting with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (what is wrong, and where the help is), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}. Fix: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="organsam",
        description="Text-prompted organ segmentation of CT and MR volumes.",
    )
    parser.add_argument("--version", action="version", version=f"organsam {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of one line (anywhere on the command line)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for modname in COMMANDS.values():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # subcommand not built yet in this checkout
            raise
        mod.add_parser(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """One line for an error that reached the top of the CLI: what went wrong and, where known, how to fix it
    (newlines and control characters of library messages are folded; a very long message is cut)."""
    from organsam.vocabulary.prompt_words import shown

    return shown(_error_text(exc), limit=600)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, (CLIError, ValueError, FileNotFoundError)) and str(exc):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or str(exc) or type(exc).__name__
        return f"{where}{what}. Fix: check the path, its permissions and the free disk space"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return (
        f"{type(exc).__name__}: {text}. Fix: check the input and options; run again with --debug for the "
        f"traceback and report it if the input is valid"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, also after the subcommand
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=logging.DEBUG if debug else level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("organsam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``organsam organs | head``): stop quietly, as other tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if debug:
            raise
        print(f"organsam {args.command}: error: {error_line(e)}", file=sys.stderr)
        if isinstance(e, CLIError):
            return e.code
        return 2 if isinstance(e, (ValueError, KeyError, FileNotFoundError)) else 1


if __name__ == "__main__":
    sys.exit(main())
