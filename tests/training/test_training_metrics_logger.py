"""MetricsLogger: CSV always, TensorBoard event files when the ``tensorboard`` package is installed."""

from __future__ import annotations

import csv

import pytest

from organsam.training.metrics_logger import MetricsLogger


def _log_a_run(out_dir, tensorboard: bool) -> MetricsLogger:
    log = MetricsLogger(out_dir, tensorboard=tensorboard)
    log.log(1, {"loss": 0.5, "lr": 1.0e-4})
    log.log(2, {"loss": 0.25, "lr": 2.0e-4})
    log.log_val(
        2, [("amos_0013_slab", "liver", 0.9), ("amos_0013_slab", "spleen", 0.7)], {"liver": 0.9, "spleen": 0.7}, 0.8
    )
    log.close()
    return log


def test_tensorboard_event_files_hold_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLogger(tmp_path / "probe", tensorboard=True)
    assert log.tensorboard_enabled
    log.close()
    _log_a_run(tmp_path, tensorboard=True)
    tb = tmp_path / "tensorboard"
    assert list(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 0.5), (2, 0.25)]
    assert acc.Scalars("train/lr")[1].value == pytest.approx(2.0e-4)
    assert acc.Scalars("val_dice/liver")[0].value == pytest.approx(0.9)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val/mean_dice")] == [(2, 0.8)]
    with (tmp_path / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"] and rows[1]["loss"] == "0.25"


def test_no_tensorboard_when_turned_off(tmp_path):
    log = _log_a_run(tmp_path, tensorboard=False)
    assert not log.tensorboard_enabled
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "val.csv").is_file()
