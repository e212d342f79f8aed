"""``organsam train``: train a design from a YAML config (+ ``key=value`` overrides).

Examples::

    organsam train --config train_default                       # packaged preset, shared data
    organsam train --config train_default --config data/amos22 data.root=/data/AMOS22 steps=20000
    torchrun --nproc_per_node=4 -m organsam.cli.main train --config my_run.yaml   # DDP

``--config`` may be given several times (merged in order); a name that is not a file is looked up among the
packaged presets (``organsam/configs/train_*.yaml``, ``organsam/configs/data/*.yaml``).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a design (YAML config, CPU / GPU / torchrun DDP)",
        description="Train a design from a YAML config; key=value arguments override config keys "
        "(e.g. steps=2000 model.freeze_mask_decoder=true data.root=/data/AMOS22).",
    )
    p.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="FILE",
        help="training YAML or packaged preset name (repeatable, merged in order)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from organsam.cli.main import CLIError
    from organsam.config import to_dict
    from organsam.training.train_config import load_train_config

    if not args.config:
        raise CLIError("give a training config: --config FILE.yaml (or a packaged preset such as train_default)")
    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from organsam.training.trainer import train

    result = train(cfg, quiet=args.quiet)
    if result.checkpoint is not None:
        msg = f"trained {cfg.design} for {result.step} steps: {result.checkpoint}"
        if result.val is not None:
            msg += f" (val mean Dice {result.val.mean_dice:.4f})"
        print(msg)
    return 0
