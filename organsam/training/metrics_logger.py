"""Training metrics to CSV files (always) and TensorBoard (when the ``tensorboard`` package is installed).

``<out_dir>/metrics.csv``: one row per logged step (``step``, ``lr``, the loss terms, ``grad_norm``,
``samples_per_s``, ...); ``<out_dir>/val.csv``: ``step, case, organ, dice`` rows plus ``mean`` rows per organ.
The CSV columns are fixed by the first row written; on resume, rows after the resumed step (written by the
interrupted run after its last checkpoint) are dropped.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """CSV (+ TensorBoard) metrics writer; a disabled logger (non-main ranks) does nothing.

    Args:
        out_dir: run folder.
        tensorboard: also write TensorBoard events to ``<out_dir>/tensorboard`` if the package is installed.
        enabled: write at all.
        resume_step: drop existing rows with a step above this (``None``: start new files).
    """

    def __init__(
        self,
        out_dir: str | Path,
        tensorboard: bool = True,
        enabled: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.writer: Any = None
        self._headers: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics", "val"):
            self._prepare(self.out_dir / f"{name}.csv", name, resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning(
                    "tensorboard is not installed: metrics are written to %s/metrics.csv only "
                    "(pip install tensorboard, or the organsam[train] extra, for TensorBoard logs)",
                    self.out_dir,
                )
            else:
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=resume_step)

    @property
    def tensorboard_enabled(self) -> bool:
        """Whether TensorBoard events are written."""
        return self.writer is not None

    def _prepare(self, path: Path, name: str, resume_step: int | None) -> None:
        if not path.is_file():
            return
        if resume_step is None:
            path.unlink()
            return
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        kept = [r for r in body if r and r[0].isdigit() and int(r[0]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(kept)
        self._headers[name] = header

    def _write(self, name: str, row: dict[str, Any]) -> None:
        path = self.out_dir / f"{name}.csv"
        header = self._headers.get(name)
        new = header is None
        if new:
            header = list(row)
            self._headers[name] = header
        extra = set(row) - set(header)
        if extra and name not in self._warned:
            logger.warning("%s: column(s) %s not in the header %s; not written", path, sorted(extra), header)
            self._warned.add(name)
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(header)
            w.writerow([_fmt(row.get(k, "")) for k in header])

    def log(self, step: int, values: dict[str, float]) -> None:
        """One row of ``metrics.csv`` (and TensorBoard scalars ``train/<name>``)."""
        if not self.enabled:
            return
        self._write("metrics", {"step": step, **values})
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, step)

    def log_val(self, step: int, rows: list[tuple[str, str, float]], per_organ: dict[str, float], mean: float) -> None:
        """Validation rows, per-organ means and the overall mean."""
        if not self.enabled:
            return
        for case, organ, dice in rows:
            self._write("val", {"step": step, "case": case, "organ": organ, "dice": dice})
        for organ, dice in sorted(per_organ.items()):
            self._write("val", {"step": step, "case": "mean", "organ": organ, "dice": dice})
        self._write("val", {"step": step, "case": "mean", "organ": "all", "dice": mean})
        if self.writer is not None:
            for organ, dice in per_organ.items():
                self.writer.add_scalar(f"val_dice/{organ}", dice, step)
            self.writer.add_scalar("val/mean_dice", mean, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
