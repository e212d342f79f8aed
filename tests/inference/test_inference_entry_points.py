"""One pipeline behind every entry point, and outputs that never destroy data.

- The CLI (``organsam.segment``), a batch and the server write reports with the same keys for one input.
- Output folders that hold the input, an existing file, a loop, an unwritable place: one-line errors before any
  compute, the input untouched.
- Errors that are not the user's fault reach the terminal as one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import amos_top_slices, data_path

from organsam.cli.main import error_line
from organsam.cli.main import main as cli
from organsam.inference.options import SegmentOptions
from organsam.vocabulary import UnknownOrganError

AMOS = ("amos_0013_slab", "image.nii.gz")
PROMPT = "liver, spleen"


@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a run gets as far as building the model: these errors must come before any compute."""

    def refuse(self: SegmentOptions, progress: bool = True) -> None:
        raise AssertionError("the model was built: the error came after the compute started")

    monkeypatch.setattr(SegmentOptions, "build_predictor", refuse)


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_input_inside_the_output_folder_is_refused_and_kept(tmp_path: Path, capsys, no_compute) -> None:
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    ct = out / "masks" / "ct.nii.gz"
    shutil.copy(data_path(*AMOS), ct)
    code = cli(["segment", "-i", str(ct), "-o", str(out), "--organs", "liver", "-q"])
    assert code == 2
    _one_line_error(capsys, str(out), "contains the input", "Fix:")
    assert ct.read_bytes() == data_path(*AMOS).read_bytes()


def test_dicom_series_named_masks_is_never_deleted(tmp_path: Path, capsys, no_compute) -> None:
    series = tmp_path / "study" / "masks"
    shutil.copytree(data_path("ts_b_dicom", "dicom"), series)
    before = sorted(p.name for p in series.iterdir())
    code = cli(["segment", "-i", str(series), "-o", str(tmp_path / "study"), "--organs", "liver", "-q"])
    assert code == 2
    _one_line_error(capsys, "contains the input")
    assert sorted(p.name for p in series.iterdir()) == before


@pytest.mark.parametrize("case", ["existing file", "the input itself", "symlink loop", "read-only place"])
def test_bad_output_is_refused_before_compute(case: str, tmp_path: Path, capsys, no_compute) -> None:
    ct = tmp_path / "ct.nii.gz"
    shutil.copy(data_path(*AMOS), ct)
    if case == "existing file":
        out = tmp_path / "report.txt"
        out.write_text("keep me")
        needle = "is an existing file"
    elif case == "the input itself":
        out, needle = ct, "is an existing file"
    elif case == "symlink loop":
        out = tmp_path / "a"
        out.symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(out)
        needle = "symbolic-link loop"
    else:
        out, needle = Path("/proc/organsam-out"), "cannot be written"
    code = cli(["segment", "-i", str(ct), "-o", str(out), "--organs", "liver", "-q"])
    assert code == 2
    _one_line_error(capsys, needle, "Fix:")
    assert ct.read_bytes() == data_path(*AMOS).read_bytes()
    if case == "existing file":
        assert out.read_text() == "keep me"


def test_cuda_on_a_cpu_build_is_one_line(tmp_path: Path, capsys, no_compute) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is valid here")
    code = cli(
        [
            "segment",
            "-i",
            str(data_path(*AMOS)),
            "-o",
            str(tmp_path / "o"),
            "--organs",
            "liver",
            "--device",
            "cuda",
            "-q",
        ]
    )
    assert code == 2
    _one_line_error(capsys, "sees no CUDA GPU", "--device cpu")
    assert not (tmp_path / "o").exists()


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path, capsys) -> None:
    import SimpleITK as sitk  # noqa: N813

    junk = tmp_path / "junk.mha"
    junk.write_bytes(b"not an image at all\n" * 10)
    try:
        sitk.ReadImage(str(junk))
    except RuntimeError as e:  # what SimpleITK raises: a multi-line message with C++ file names
        line = error_line(e)
        assert "\n" not in line and line.startswith("RuntimeError:") and "--debug" in line
    else:
        pytest.fail("SimpleITK read a junk file")
    perm = PermissionError(13, "Permission denied", "/data/out/report.json")
    assert error_line(perm) == (
        "/data/out/report.json: Permission denied. Fix: check the path, its permissions and the free disk space"
    )
    with pytest.raises(UnknownOrganError):  # --debug (anywhere on the line) lets the real exception through
        cli(["segment", "-i", str(data_path(*AMOS)), "-o", str(tmp_path / "o"), "--organs", "livr", "--debug"])
    assert cli(["segment", "-i", str(data_path(*AMOS)), "-o", str(tmp_path / "o"), "--organs", "livr"]) == 2
    _one_line_error(capsys, "did you mean")


def _keys(obj: object, prefix: str = "") -> set[str]:
    """Every key path of a nested report (organ ids and label values are data, not keys: collapsed)."""
    if not isinstance(obj, dict):
        return set()
    out: set[str] = set()
    for k, v in obj.items():
        name = "*" if prefix.endswith(("organs", "labels")) else str(k)
        out.add(prefix + name)
        out |= _keys(v, prefix + name + ".")
    return out


def test_cli_batch_and_server_reports_have_the_same_keys(tmp_path: Path) -> None:
    import json

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from organsam.inference.batch import run_batch
    from organsam.server import ServerSettings, create_app

    src, _ = amos_top_slices("amos_0013_slab", tmp_path / "ct")
    assert cli(["segment", "-i", str(src), "-o", str(tmp_path / "cli"), "--organs", PROMPT, "-q"]) == 0
    cli_report = json.loads((tmp_path / "cli" / "report.json").read_text())
    folder = tmp_path / "batch_in"
    folder.mkdir()
    shutil.copy(src, folder / "amos0013.nii.gz")
    summary = run_batch(folder, PROMPT, tmp_path / "batch_out", progress=False)
    assert summary.exit_code == 0
    batch_report = json.loads((tmp_path / "batch_out" / "amos0013" / "report.json").read_text())
    app = create_app(ServerSettings(workdir=tmp_path / "serve"))
    with TestClient(app, base_url="http://localhost") as client, open(src, "rb") as f:
        sid = client.post("/api/sessions", files={"file": ("amos.nii.gz", f)}).json()["id"]
        job = client.post(f"/api/sessions/{sid}/segment", json={"prompt": PROMPT}).json()
        t0 = time.monotonic()
        while client.get(f"/api/jobs/{job['id']}").json()["state"] in ("queued", "running"):
            assert time.monotonic() - t0 < 600
            time.sleep(0.25)
        server_report = client.get(f"/api/sessions/{sid}/result").json()["report"]
    assert _keys(cli_report) == _keys(batch_report) == _keys(server_report)
    import torch

    from organsam.weights import WEIGHTS

    for report in (cli_report, batch_report, server_report):
        assert report["prompt"] == PROMPT and report["organ_ids"] == ["liver", "spleen"]
        assert report["organsam_version"] and report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
        assert report["weights_sha256"] == {
            "lite_medsam": WEIGHTS["lite_medsam"].sha256,
            "atlas": WEIGHTS["atlas"].sha256,
        }
    # the same pipeline gives the same masks: identical organ volumes from all three entry points
    vols = [
        {k: r["organs"][k]["voxels"] for k in ("liver", "spleen")} for r in (cli_report, batch_report, server_report)
    ]
    assert vols[0] == vols[1] == vols[2], vols


def test_reports_say_which_organs_text_cannot_locate(tmp_path: Path) -> None:
    """An organ the location atlas lacks is "not_locatable" (with the fix), never "absent"; "all organs" leaves
    such organs out."""
    from organsam.inference.options import resolve_organs
    from organsam.inference.pipeline import locatable_request, run_segmentation
    from organsam.inference.predictor_factory import build_predictor
    from organsam.io import load_volume

    predictor = build_predictor(progress=False)
    vol = load_volume(data_path(*AMOS))
    res = run_segmentation(predictor, vol, resolve_organs("spleen, esophagus, rectum, urinary bladder"))
    organs = res.report["organs"]
    assert organs["spleen"]["status"] == "present"
    for oid in ("esophagus", "rectum"):
        assert organs[oid]["status"] == "not_locatable" and not organs[oid]["present"]
        assert "give a box" in organs[oid]["absent_reason"]
    # the atlas has the bladder, but places it below this upper-abdominal slab: searched, absent
    assert (
        organs["urinary_bladder"]["status"] == "absent"
        and "outside this scan" in organs["urinary_bladder"]["absent_reason"]
    )
    every = resolve_organs(None, all_organs=True)
    assert {"esophagus", "rectum", "prostate_uterus"} <= set(every.organ_ids)
    known = predictor.locatable_organs()
    assert known is not None and "liver" in known and "esophagus" not in known
    kept = locatable_request(predictor, every)
    assert kept.organ_ids == tuple(o for o in every.organ_ids if o in known) and "esophagus" not in kept.organ_ids


def test_mr_organs_are_placed_by_the_ct_atlas_through_a_pseudo_ct() -> None:
    """On MR the CT atlas is registered onto a pseudo-CT (body by intensity rank, air outside; no Demons): the
    liver, spleen and kidneys of TS-MR are found and drawn mostly on themselves. Agreement with TS-MR's labels
    (another model's output, not ground truth) measured 0.83 / 0.80 / 0.83 / 0.83; box search (on for MR) took
    the liver from 0.64 (half the organ, or the organ with its neighbours, in the atlas's too-wide boxes)."""
    import numpy as np

    from organsam.inference.options import resolve_organs
    from organsam.inference.pipeline import run_segmentation
    from organsam.inference.predictor_factory import build_predictor
    from organsam.io import load_labels, load_volume
    from organsam.vocabulary import labelmap_info

    vol = load_volume(data_path("ts_mr", "image.nii.gz"))
    ref = load_labels(data_path("ts_mr", "label_ts_mr.nii.gz"), vol)
    assert vol.modality == "MR"
    organs = ("liver", "spleen", "kidney_left", "kidney_right")
    res = run_segmentation(build_predictor(progress=False), vol, resolve_organs(", ".join(organs)))
    info = labelmap_info("totalsegmentator_mr")
    dice = {}
    for oid in organs:
        assert res.report["organs"][oid]["status"] == "present"
        own = np.isin(ref, info.values_for(oid))
        mask = res.masks[oid]
        dice[oid] = 2 * (mask & own).sum() / (mask.sum() + own.sum())
        for value, other in info.organs.items():  # never drawn on a neighbouring organ
            assert other == oid or (mask & (ref == value)).sum() < 0.5 * mask.sum(), (oid, other)
    assert min(dice.values()) > 0.75, dice  # the issue asks >= 0.7


def test_the_device_is_chosen_automatically_by_default() -> None:
    """No --device: the GPU where torch sees one, else the CPU (the CLI, segment() and the server agree)."""
    import torch

    from organsam.cli.main import build_parser
    from organsam.inference.predictor_factory import check_device, resolve_device
    from organsam.server.settings import ServerSettings

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected and resolve_device("cpu") == "cpu"
    check_device("auto")
    args = build_parser().parse_args(["segment", "-i", "ct.nii.gz", "-o", "out", "--organs", "liver"])
    assert args.device == "auto" and ServerSettings().device == "auto"
    assert build_parser().parse_args(["serve"]).device == "auto"
