"""Evaluation: per-organ Dice / HD95 / NSD (MONAI), published protocols and report tables.

- ``metrics``: :func:`score_organ`, :func:`dice`, :func:`hausdorff`, :func:`surface_dice`, NSD tolerances and
  the empty-case rules (the conventions are written out in that module's docstring).
- ``protocols``: ``synapse8``, ``btcv13``, ``amos15``, ``word16``, ``flare13`` (:func:`get_protocol`).
- ``evaluate``: :func:`evaluate` (files/folders -> :class:`EvaluationResult`), :func:`score_case`.
- ``report``: Markdown/CSV/JSON tables and PIL bar charts.

Nothing here imports torch at import time (MONAI is imported on the first metric computation).
"""

from organsam.evaluation.evaluate import (
    METRICS,
    EvaluationError,
    EvaluationResult,
    evaluate,
    load_prediction,
    pair_cases,
    score_case,
)
from organsam.evaluation.metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    EMPTY_RULES,
    NSD_TOLERANCE_MM,
    EmptyOutcome,
    EmptyRule,
    OrganScore,
    dice,
    empty_rule,
    hausdorff,
    nsd_tolerance,
    score_organ,
    surface_dice,
)
from organsam.evaluation.protocols import (
    PROTOCOLS,
    Protocol,
    UnknownProtocolError,
    get_protocol,
    list_protocols,
)
from organsam.evaluation.report import bar_chart, comparison_markdown, result_markdown

__all__ = [
    "DEFAULT_NSD_TOLERANCE_MM",
    "EMPTY_RULES",
    "METRICS",
    "NSD_TOLERANCE_MM",
    "PROTOCOLS",
    "EmptyOutcome",
    "EmptyRule",
    "EvaluationError",
    "EvaluationResult",
    "OrganScore",
    "Protocol",
    "UnknownProtocolError",
    "bar_chart",
    "comparison_markdown",
    "dice",
    "empty_rule",
    "evaluate",
    "get_protocol",
    "hausdorff",
    "list_protocols",
    "load_prediction",
    "nsd_tolerance",
    "pair_cases",
    "result_markdown",
    "score_case",
    "score_organ",
    "surface_dice",
]
