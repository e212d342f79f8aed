"""Command-line interface: one console script ``organsam`` with subcommands (see ``main.py``)."""
