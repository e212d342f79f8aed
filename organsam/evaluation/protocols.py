"""Published evaluation protocols: which organs, which reference label map, how empty cases count.

Each :class:`Protocol` names the organs of a published results table (in that table's column order), the
packaged label map of its reference labels, the empty-case rule of its evaluation code and the unit its
papers report HD95 in. organsam always reports HD95 in millimetres (unless asked for voxels) and says so
in :meth:`Protocol.describe`, which is printed above every table.

>>> get_protocol("synapse8").organs[:2]
('aorta', 'gallbladder')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from organsam.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, empty_rule, nsd_tolerance
from organsam.vocabulary import labelmap_info, load_vocabulary

__all__ = ["PROTOCOLS", "Protocol", "UnknownProtocolError", "get_protocol", "list_protocols"]


class UnknownProtocolError(ValueError):
    """A protocol name that is not defined."""


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol of a published benchmark.

    Attributes:
        name: protocol name (``"synapse8"``).
        title: display title.
        organs: vocabulary organ ids in the column order of the published tables.
        labelmap: packaged label map of the benchmark's reference labels (``organsam.vocabulary``).
        empty_rule: name of the :data:`organsam.evaluation.metrics.EMPTY_RULES` entry its code follows.
        metrics: the metrics the benchmark's papers report (``"dice"``, ``"hd95"``, ``"nsd"``).
        published_hd95_unit: ``"mm"``, ``"voxels"`` or ``"-"`` (HD95 not part of the benchmark).
        source: where the conventions come from.
        notes: anything else a reader of the table must know.
    """

    name: str
    title: str
    organs: tuple[str, ...]
    labelmap: str
    empty_rule: str
    metrics: tuple[str, ...]
    published_hd95_unit: str
    source: str
    notes: str = ""

    def organ_names(self) -> dict[str, str]:
        """organ id -> short display name for table headers ("Kidney (L)")."""
        vocab = load_vocabulary()
        return {o: _short_name(o, vocab[o].name) for o in self.organs}

    def describe(self, hd95_unit: str = "mm", rule: str | None = None) -> str:
        """Text printed above result tables: organs, reference labels, empty cases, units, tolerances.

        Args:
            hd95_unit: the unit HD95 is reported in by this evaluation (``"mm"`` or ``"voxels"``).
            rule: the empty-case rule actually applied, when it differs from the protocol's own.
        """
        used = empty_rule(rule or self.empty_rule)
        names = self.organ_names()
        override = "" if used.name == self.empty_rule else f", instead of the protocol rule {self.empty_rule}"
        tol = ", ".join(f"{names[o]} {nsd_tolerance(o):g}" for o in self.organs)
        pub = {
            "mm": "in millimetres",
            "voxels": "in voxels of the evaluated grid",
            "-": "not at all (HD95 is not part of this benchmark)",
        }[self.published_hd95_unit]
        lines = [
            f"Protocol {self.name}: {self.title}.",
            f"Organs ({len(self.organs)}, table order): {', '.join(names[o] for o in self.organs)}.",
            f"Reference label map: {self.labelmap} (another map can be given; organs are matched by vocabulary id).",
            f"Published metrics: {', '.join(m.upper() if m != 'dice' else 'Dice' for m in self.metrics)}; "
            f"source: {self.source}.",
            f"HD95: published {pub}; reported here in "
            f"{'millimetres' if hd95_unit == 'mm' else 'voxels (spacing taken as 1)'} "
            f"(MONAI: max of the two directed 95th percentiles of surface-voxel distances).",
            f"NSD tolerance (mm): {tol} (default {DEFAULT_NSD_TOLERANCE_MM:g}).",
            f"Empty cases ({used.name}{override}): {used.description}",
            "Means: per organ over cases (n/a left out); 'mean' = mean of the organ means; std is the "
            "population std (ddof 0) over cases.",
        ]
        if self.notes:
            lines.append(self.notes)
        return "\n".join(lines)


def _short_name(organ_id: str, name: str) -> str:
    special = {
        "inferior_vena_cava": "IVC",
        "portal_vein_and_splenic_vein": "PV/SV",
        "prostate_uterus": "Prostate/uterus",
        "urinary_bladder": "Bladder",
    }
    if organ_id in special:
        return special[organ_id]
    for side, tag in (("right", "R"), ("left", "L")):
        if name.startswith(side + " "):
            return f"{name[len(side) + 1 :].capitalize()} ({tag})"
    return name.capitalize()


def _label_order(labelmap: str) -> tuple[str, ...]:
    organs = labelmap_info(labelmap).organs
    return tuple(o for _, o in sorted(organs.items()) if o is not None)


@functools.lru_cache(maxsize=1)
def _protocols() -> dict[str, Protocol]:
    defs = [
        Protocol(
            "synapse8",
            "Synapse multi-organ CT, 8 organs (TransUNet split and evaluation)",
            _label_order("synapse"),
            "synapse",
            "transunet",
            ("dice", "hd95"),
            "voxels",
            "TransUNet (Chen et al., 2021) test code: medpy dc/hd95 per case and organ",
            "Published HD95 comes from medpy hd95 without voxel spacing (voxel units, pooled directions); "
            "numbers in mm are not comparable to them unless the grid is 1 mm isotropic.",
        ),
        Protocol(
            "btcv13",
            "BTCV (Multi-Atlas Labeling Beyond the Cranial Vault), 13 organs",
            _label_order("btcv"),
            "btcv",
            "monai",
            ("dice",),
            "-",
            "MONAI DiceMetric(include_background=False, ignore_empty=True) as in UNETR / Swin UNETR",
        ),
        Protocol(
            "amos15",
            "AMOS22 abdominal CT/MR, 15 organs",
            _label_order("amos22"),
            "amos22",
            "strict",
            ("dice", "nsd"),
            "-",
            "AMOS22 challenge (Dice and NSD); NSD tolerances are organsam's table, not AMOS's own",
        ),
        Protocol(
            "word16",
            "WORD abdominal CT, 16 organs",
            _label_order("word"),
            "word",
            "strict",
            ("dice", "hd95"),
            "mm",
            "WORD (Luo et al., 2022): Dice and HD95 in mm",
            "WORD labels both adrenal glands as one class; a prediction of the two sides is merged.",
        ),
        Protocol(
            "flare13",
            "FLARE22 abdominal CT, 13 organs",
            _label_order("flare22"),
            "flare22",
            "strict",
            ("dice", "nsd"),
            "-",
            "FLARE22 official evaluation (DSC and NSD with organ-specific tolerances)",
        ),
    ]
    return {p.name: p for p in defs}


#: Protocol names, in the order they are listed.
PROTOCOLS: tuple[str, ...] = ("synapse8", "btcv13", "amos15", "word16", "flare13")


def list_protocols() -> list[str]:
    """Names of the defined protocols."""
    return list(PROTOCOLS)


def get_protocol(name: str | Protocol) -> Protocol:
    """The :class:`Protocol` called ``name`` (case-insensitive; ``"synapse"``, ``"btcv"``, ``"amos"``,
    ``"word"`` and ``"flare"`` also work).

    Raises:
        UnknownProtocolError: no such protocol.
    """
    if isinstance(name, Protocol):
        return name
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    aliases = {
        "synapse": "synapse8",
        "btcv": "btcv13",
        "amos": "amos15",
        "amos22": "amos15",
        "word": "word16",
        "flare": "flare13",
        "flare22": "flare13",
    }
    key = aliases.get(key, key)
    table = _protocols()
    if key not in table:
        raise UnknownProtocolError(f"unknown evaluation protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return table[key]
