"""Output folders appear whole or not at all and never destroy what the run did not create
(``organsam.io.output_folder``): replacement, refusal, concurrent writers, killed writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from organsam.io.output_folder import OUTPUT_MARKER, OutputFolderError, check_output_folder, write_output_folder


def _writer(files: dict[str, str]):
    def build(stage: Path) -> dict[str, Path]:
        out = {}
        for rel, text in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_text(text)
            out[rel] = stage / rel
        return out

    return build


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != OUTPUT_MARKER
    }


def test_second_run_replaces_the_first_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = {"report.json": "1", "masks/liver.nii.gz": "L", "masks/spleen.nii.gz": "S"}
    paths = write_output_folder(out, _writer(first))
    assert paths["masks/liver.nii.gz"] == out / "masks" / "liver.nii.gz" and paths["report.json"].read_text() == "1"
    assert json.loads((out / OUTPUT_MARKER).read_text())["files"] == [
        "masks/liver.nii.gz",
        "masks/spleen.nii.gz",
        "report.json",
    ]
    write_output_folder(out, _writer({"report.json": "2", "masks/liver.nii.gz": "L2"}))
    assert _tree(out) == {"report.json": "2", "masks/liver.nii.gz": "L2"}  # no file of the first run is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder beside it


def test_folder_with_foreign_files_is_refused_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"notes\.txt.*Fix: choose a new or empty output folder"):
        write_output_folder(out, _writer({"report.json": "1"}))
    assert _tree(out) == {"notes.txt": "mine"}
    # a file added by the user to an earlier result folder protects the whole folder too
    out2 = tmp_path / "out2"
    write_output_folder(out2, _writer({"report.json": "1"}))
    (out2 / "masks").mkdir()
    (out2 / "masks" / "ct.nii.gz").write_text("an input someone put here")
    with pytest.raises(OutputFolderError, match=r"masks/ct\.nii\.gz"):
        write_output_folder(out2, _writer({"report.json": "2"}))
    assert (out2 / "masks" / "ct.nii.gz").read_text() == "an input someone put here"


def test_inputs_are_never_replaced_or_written_into(tmp_path: Path) -> None:
    series = tmp_path / "study" / "masks"  # a DICOM series folder that happens to be called "masks"
    series.mkdir(parents=True)
    (series / "1.dcm").write_text("slice")
    ct = tmp_path / "ct.nii.gz"
    ct.write_text("ct")
    with pytest.raises(OutputFolderError, match="contains the input"):
        check_output_folder(tmp_path / "study", [series])
    with pytest.raises(OutputFolderError, match="is the input itself"):
        check_output_folder(series, [series])
    with pytest.raises(OutputFolderError, match="lies inside the input folder"):
        check_output_folder(series / "out", [series])
    with pytest.raises(OutputFolderError, match="is an existing file"):
        check_output_folder(ct, [ct])
    assert (series / "1.dcm").read_text() == "slice" and ct.read_text() == "ct"


def test_unusable_places_are_refused_in_one_line(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    for bad, why in (
        (loop, "symbolic-link loop"),
        (Path("/proc/organsam-out"), "cannot be written"),
        (tmp_path / "dangling", "dangling"),
    ):
        if why == "dangling":
            bad.symlink_to(tmp_path / "nowhere")
        with pytest.raises(OutputFolderError, match=why) as e:
            check_output_folder(bad)
        assert "\n" not in str(e.value) and "Fix:" in str(e.value)


def test_failed_build_leaves_the_previous_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output_folder(out, _writer({"report.json": "1", "masks/liver.nii.gz": "L"}))

    def failing(stage: Path) -> dict[str, Path]:
        (stage / "report.json").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_output_folder(out, failing)
    assert _tree(out) == {"report.json": "1", "masks/liver.nii.gz": "L"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _concurrent_writer(out: str, k: int) -> None:
    files = {f"masks/organ{i}.nii.gz": str(k) for i in range(k + 1)}
    write_output_folder(out, _writer(files | {"report.json": str(k)}))


def test_concurrent_writers_leave_one_whole_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_concurrent_writer, args=(str(out), k)) for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    tree = _tree(out)
    k = int(tree["report.json"])
    assert tree == {f"masks/organ{i}.nii.gz": str(k) for i in range(k + 1)} | {"report.json": str(k)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _slow_writer(out: str) -> None:
    def build(stage: Path) -> dict[str, Path]:
        (stage / "report.json").write_text("killed")
        time.sleep(60)
        return {}

    write_output_folder(out, build)


def test_staging_of_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output_folder(out, _writer({"report.json": "1"}))
    proc = mp.get_context("fork").Process(target=_slow_writer, args=(str(out),))
    proc.start()
    deadline = time.time() + 30
    while not list(tmp_path.glob(".organsam-stage-out-*/report.json")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert list(tmp_path.glob(".organsam-stage-out-*"))  # what SIGKILL leaves behind
    assert _tree(out) == {"report.json": "1"}  # the previous result is still whole
    write_output_folder(out, _writer({"report.json": "2"}))
    assert _tree(out) == {"report.json": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_result_left_aside_by_a_killed_run_is_put_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output_folder(out, _writer({"report.json": "1"}))
    os.replace(out, tmp_path / ".organsam-old-out-123-abcdef01")  # killed between its two renames
    check = tmp_path / "other"
    write_output_folder(check, _writer({"report.json": "x"}))  # any writer in the folder repairs it
    assert _tree(out) == {"report.json": "1"}
