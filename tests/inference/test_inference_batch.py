"""Batch inference over many volumes: discovery, the resumable manifest, the local process pool, a SIGKILL
half way through a CLI run and its resumption, on real CT from ``../shared/data`` plus a truncated copy.

The real segmentations are shared: one module-scoped pool run (2 workers) is the reference the resumed
and killed runs are compared with (the Ray tests are in ``test_inference_batch_ray.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, amos_top_slices, data_path

from organsam.cli.main import main as cli
from organsam.inference.batch import (
    MANIFEST_NAME,
    BatchInputError,
    BatchManifest,
    BatchSettings,
    discover_cases,
    hash_outputs,
    input_sha256,
    is_batch_input,
    run_batch,
)

ORGANS = "liver, spleen"


def make_batch_folder(folder: Path) -> Path:
    """The upper slices of two real AMOS CT slabs (their reference labels beside the folder) and a truncated copy
    of one of them (a corrupt gzip)."""
    for cid, case in (("amos0001", "amos_0001_slab"), ("amos0013", "amos_0013_slab")):
        amos_top_slices(case, folder, cid)
        (folder / f"{cid}_label.nii.gz").rename(folder.parent / f"{cid}_label.nii.gz")
    src = (folder / "amos0013.nii.gz").read_bytes()
    (folder / "broken.nii.gz").write_bytes(src[: len(src) // 3])
    return folder


def comparable_outputs(case_dir: Path) -> dict[str, object]:
    """Output hashes, with report.json compared by content less its timings (they differ run to run)."""
    out: dict[str, object] = dict(hash_outputs(case_dir))
    report = json.loads((case_dir / "report.json").read_text())
    report.pop("timings_s")
    out["report.json"] = report
    return out


@pytest.fixture(scope="module")
def batch_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_batch_folder(tmp_path_factory.mktemp("batch_in") / "scans")


@pytest.fixture(scope="module")
def pool_run(batch_input: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted reference: a 2-process pool over the folder."""
    out = tmp_path_factory.mktemp("batch_pool") / "results"
    summary = run_batch(batch_input, ORGANS, out, workers=2, progress=False)
    return summary, out


# ------------------------------------------------------------------------------------------ discovery
def test_discover_folder_files_and_dicom_series(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "ct_a.nii.gz").symlink_to(data_path("amos_0013_slab", "image.nii.gz"))
    (scans / "mr b.nii.gz").symlink_to(data_path("ts_mr", "image.nii.gz"))
    (scans / "series1").symlink_to(data_path("ts_b_dicom", "dicom"), target_is_directory=True)
    (scans / "notes.md").write_text("not a volume")
    (scans / ".hidden.nii.gz").write_text("ignored")
    (scans / "empty_dir").mkdir()
    (scans / "results").mkdir()  # the output folder inside the input folder is left out
    cases = discover_cases(scans, exclude=scans / "results")
    assert [(c.case_id, c.path.name) for c in cases] == [
        ("ct_a", "ct_a.nii.gz"),
        ("mr_b", "mr b.nii.gz"),
        ("series1", "series1"),
    ]
    assert is_batch_input(scans)
    assert not is_batch_input(data_path("ts_b_dicom", "dicom"))  # a DICOM series folder is one volume
    assert not is_batch_input(scans / "ct_a.nii.gz")
    # a DICOM folder's hash covers its files; a volume's is its bytes' SHA-256
    assert input_sha256(scans / "series1") == input_sha256(data_path("ts_b_dicom", "dicom"))
    assert input_sha256(scans / "ct_a.nii.gz") != input_sha256(scans / "mr b.nii.gz")


def test_discover_manifests(tmp_path: Path) -> None:
    img = data_path("amos_0013_slab", "image.nii.gz")
    dcm = data_path("ts_b_dicom", "dicom")
    (tmp_path / "local.nii.gz").symlink_to(img)
    (tmp_path / "m.csv").write_text(f"case_id,path\nfirst,{img}\n,local.nii.gz\n")
    cases = discover_cases(tmp_path / "m.csv")
    assert [(c.case_id, c.path) for c in cases] == [("first", img), ("local", tmp_path / "local.nii.gz")]
    (tmp_path / "n.csv").write_text(f"{img}\nx2,{dcm}\n")  # no header: path, or case_id,path
    assert [c.case_id for c in discover_cases(tmp_path / "n.csv")] == ["image", "x2"]
    (tmp_path / "m.json").write_text(json.dumps({"cases": [str(img), {"path": str(dcm), "case_id": "tsb"}]}))
    got = [(c.case_id, c.path) for c in discover_cases(tmp_path / "m.json")]
    assert got == [("image", img), ("tsb", dcm)]
    (tmp_path / "d.json").write_text(json.dumps({"p1": str(img)}))
    assert [c.case_id for c in discover_cases(tmp_path / "d.json")] == ["p1"]
    (tmp_path / "m.txt").write_text(f"# scans\n{img}\n\nother\t{dcm}\n")
    got = [(c.case_id, c.path) for c in discover_cases(tmp_path / "m.txt")]
    assert got == [("image", img), ("other", dcm)]
    # same file names in different folders: the folder names tell them apart
    (tmp_path / "same.txt").write_text(f"{img}\n{data_path('amos_0001_slab', 'image.nii.gz')}\n")
    assert [c.case_id for c in discover_cases(tmp_path / "same.txt")] == [
        "amos_0013_slab_image",
        "amos_0001_slab_image",
    ]
    (tmp_path / "dup.txt").write_text(f"a\t{img}\na\t{dcm}\n")
    with pytest.raises(BatchInputError, match="two inputs get the case id 'a'"):
        discover_cases(tmp_path / "dup.txt")
    (tmp_path / "bad.csv").write_text(f"case_id,path\n../up,{img}\n")
    with pytest.raises(BatchInputError, match="not usable as a folder name"):
        discover_cases(tmp_path / "bad.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BatchInputError, match="no volumes found"):
        discover_cases(empty)


def test_cli_batch_bad_prompt_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.nii.gz").symlink_to(data_path("amos_0013_slab", "image.nii.gz"))
    out = tmp_path / "out"
    code = cli(["segment", "-i", str(scans), "-o", str(out), "--organs", "livr, spleen", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------------------------------ pool run
@pytest.mark.slow
def test_pool_run_segments_and_isolates_the_corrupt_volume(pool_run, batch_input: Path) -> None:
    summary, out = pool_run
    states = {c.case_id: c.state for c in summary.cases}
    assert states == {"amos0001": "done", "amos0013": "done", "broken": "failed"}
    assert summary.backend == "pool" and summary.workers == 2 and summary.exit_code == 1
    broken = next(c for c in summary.cases if c.case_id == "broken")
    assert "broken.nii.gz" in broken.message and "truncated or corrupt" in broken.message
    text = summary.format()
    assert "failed   broken" in text and "2 done, 0 skipped, 1 failed" in text

    manifest = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    for cid in ("amos0001", "amos0013"):
        rec = manifest[cid]
        assert rec["status"] == "done" and rec["prompt"] == "liver, spleen" and rec["error"] is None
        assert rec["input_sha256"] == input_sha256(batch_input / f"{cid}.nii.gz")
        assert rec["outputs"] == hash_outputs(out / cid)
        assert {
            "segmentation.nii.gz",
            "masks/liver.nii.gz",
            "masks/spleen.nii.gz",
            "report.json",
            "overview.png",
        } <= set(rec["outputs"])
        assert rec["timings_s"]["wall"] > 0 and rec["worker"].split(":")[-1] != str(os.getpid())
        report = json.loads((out / cid / "report.json").read_text())
        assert report["input"] == str(batch_input / f"{cid}.nii.gz")
        assert report["organs"]["liver"]["present"] and report["organs"]["spleen"]["present"]
    assert manifest["broken"]["status"] == "failed" and manifest["broken"]["outputs"] == {}
    assert not (out / "broken").exists()
    # the batch output of a case is exactly what a single-volume run writes: check the liver against the
    # AMOS reference annotation of the slab
    from organsam.io import load_labels, load_volume

    vol = load_volume(batch_input / "amos0013.nii.gz")
    ref = load_labels(batch_input.parent / "amos0013_label.nii.gz", vol)
    seg = load_labels(out / "amos0013" / "segmentation.nii.gz", vol)
    liver_ref, liver = ref == 6, seg == 5  # AMOS 6 = liver; ours (fixed, TotalSegmentator's) 5 = liver
    dice = 2 * (liver_ref & liver).sum() / (liver_ref.sum() + liver.sum())
    assert dice > 0.75, dice
    assert not [p for p in out.rglob(".organsam-*") if p.name != ".organsam-output.json"]  # no staging left


@pytest.mark.slow
def test_resume_skips_finished_and_retries_failed(pool_run, batch_input: Path, tmp_path: Path) -> None:
    _, ref_out = pool_run
    out = tmp_path / "results"
    shutil.copytree(ref_out, out)
    t0 = time.perf_counter()
    summary = run_batch(batch_input, ORGANS, out, workers=1, progress=False)
    elapsed = time.perf_counter() - t0
    assert [(c.case_id, c.state) for c in summary.cases] == [
        ("amos0001", "skipped"),
        ("amos0013", "skipped"),
        ("broken", "failed"),
    ]
    assert elapsed < 20, f"nothing to segment, yet took {elapsed:.1f} s"  # the model is never built
    manifest = BatchManifest(out / MANIFEST_NAME)
    assert manifest.cases["broken"]["attempts"] == 2  # failures are retried on every run
    assert (
        manifest.cases["amos0013"]["finished_at"]
        == json.loads((ref_out / MANIFEST_NAME).read_text())["cases"]["amos0013"]["finished_at"]
    )  # untouched

    settings = BatchSettings(("liver", "spleen"))
    sha = input_sha256(batch_input / "amos0013.nii.gz")
    assert manifest.is_current("amos0013", sha, settings, out / "amos0013") == (True, "")
    assert not manifest.is_current("amos0013", "0" * 64, settings, out / "amos0013")[0]
    assert not manifest.is_current("amos0013", sha, BatchSettings(("liver",)), out / "amos0013")[0]
    assert not manifest.is_current("amos0013", sha, BatchSettings(("liver", "spleen"), fast=True), out / "amos0013")[0]
    assert not manifest.is_current("broken", input_sha256(batch_input / "broken.nii.gz"), settings, out / "broken")[0]
    mask = out / "amos0013" / "masks" / "liver.nii.gz"
    mask.write_bytes(mask.read_bytes()[:-10])  # a damaged output means the case is not finished
    ok, why = manifest.is_current("amos0013", sha, settings, out / "amos0013")
    assert not ok and "masks/liver.nii.gz" in why
    mask.unlink()
    assert not manifest.is_current("amos0013", sha, settings, out / "amos0013")[0]


@pytest.mark.slow
def test_kill_half_way_then_resume_gives_the_uninterrupted_result(pool_run, batch_input: Path, tmp_path: Path) -> None:
    _, ref_out = pool_run
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "organsam.cli.main",
        "segment",
        "-i",
        str(batch_input),
        "-o",
        str(out),
        "--organs",
        ORGANS,
        "-q",
    ]
    # one torch thread, as each worker of the 2-process reference run had (same arithmetic, and faster
    # than 2 threads on the 2 shared cores)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env
    )
    manifest_path = out / MANIFEST_NAME
    deadline = time.monotonic() + 400
    first_done = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest_path.exists():
                cases = json.loads(manifest_path.read_text())["cases"]
                done = [cid for cid, r in cases.items() if r["status"] == "done"]
                if done:
                    first_done = done[0]
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only the process group started above
        _, err = proc.communicate(timeout=60)
    assert first_done == "amos0001", (proc.returncode, err.decode(errors="replace")[-2000:])
    assert proc.returncode == -signal.SIGKILL  # stopped half way, not finished
    recorded = json.loads(manifest_path.read_text())["cases"]
    assert set(recorded) == {"amos0001"}  # amos0013 was being segmented when the run was killed

    rerun = subprocess.run(cmd[:-1], cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert rerun.returncode == 1, rerun.stderr  # broken.nii.gz fails, the others are complete
    lines = rerun.stdout.splitlines()
    assert lines[0].startswith("skipped  amos0001") and lines[1].startswith("done     amos0013")
    assert lines[2].startswith("failed   broken") and "1 done, 1 skipped, 1 failed" in lines[3]
    manifest = json.loads(manifest_path.read_text())["cases"]
    assert {cid: r["status"] for cid, r in manifest.items()} == {
        "amos0001": "done",
        "amos0013": "done",
        "broken": "failed",
    }
    for cid in ("amos0001", "amos0013"):
        assert comparable_outputs(out / cid) == comparable_outputs(ref_out / cid), cid
        assert manifest[cid]["outputs"] == hash_outputs(out / cid)
    assert not [p for p in out.rglob(".organsam-*") if p.name != ".organsam-output.json"]  # no staging left
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "amos0001",
        "amos0013",
        MANIFEST_NAME,
    ]


# ------------------------------------------------------------------------------------------ Ray
def test_cli_ray_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.nii.gz").symlink_to(data_path("amos_0013_slab", "image.nii.gz"))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    out = tmp_path / "out"
    code = cli(["segment", "-i", str(scans), "-o", str(out), "--organs", ORGANS, "--ray", "local", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'organsam[ray]'" in err
    assert not out.exists()


@pytest.mark.slow
def test_ray_actors_on_a_loopback_cluster(pool_run, batch_input: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'organsam[ray]')")
    _, ref_out = pool_run
    out = tmp_path / "results"
    out.mkdir()
    # resume on Ray too: amos0001 is already finished (as the pool run left it)
    shutil.copytree(ref_out / "amos0001", out / "amos0001")
    seed = json.loads((ref_out / MANIFEST_NAME).read_text())
    seed["cases"] = {"amos0001": seed["cases"]["amos0001"]}
    (out / MANIFEST_NAME).write_text(json.dumps(seed))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local cluster on loopback
    try:
        summary = run_batch(batch_input, ORGANS, out, ray="local", workers=2, progress=False)
        assert ray.is_initialized()  # the running session was used and left to its owner
    finally:
        ray.shutdown()
    assert [(c.case_id, c.state) for c in summary.cases] == [
        ("amos0001", "skipped"),
        ("amos0013", "done"),
        ("broken", "failed"),
    ]
    assert summary.backend == "ray" and summary.workers == 2
    manifest = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    workers = {cid: manifest[cid]["worker"] for cid in ("amos0013", "broken")}
    assert all(w.startswith("ray:") for w in workers.values()) and len(set(workers.values())) == 2, workers
    broken = next(c for c in summary.cases if c.case_id == "broken")
    assert str(batch_input / "broken.nii.gz") in broken.message and "organsam-ray-" not in broken.message
    # the actor's outputs, sent back as bytes and written by the driver, equal the local pool's
    assert comparable_outputs(out / "amos0013") == comparable_outputs(ref_out / "amos0013")
    assert manifest["amos0013"]["outputs"] == hash_outputs(out / "amos0013")
    assert not list(out.glob(".organsam-stage-*")) and not list(out.glob(".organsam-old-*"))
