"""The bad inputs organsam refuses, as one table: each row builds a bad input from real data, runs the command line
on it, and checks that the answer is one line on stderr that names the problem (and the file, where there is one),
with a non-zero exit, no traceback and no output folder left behind.

Every row is a class of bad input found by trying the tool as a new user would (issue 17). The rows that only
warn (qform and sform that disagree, CT values read as MR) are at the end of this file.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path

from organsam.cli.main import main

Build = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    """A bad input: ``build(tmp)`` makes it and returns the command-line arguments; the one-line answer must
    contain every string of ``says`` (``{tmp}`` is the temporary folder); ``names_file``: the line names the
    input path."""

    name: str
    build: Build
    says: tuple[str, ...]
    names_file: bool = True


def _amos() -> nib.Nifti1Image:
    return nib.load(str(data_path("amos_0013_slab", "image.nii.gz")))


def _nifti(tmp: Path, name: str, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    img = _amos()
    out = tmp / name
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(out))
    return out


def _ct(tmp: Path) -> np.ndarray:
    return np.asarray(_amos().dataobj).astype(np.int16)


def seg(inp: Path | str, *extra: str, organs: str | None = "liver", out: str | None = None) -> Build:
    """A builder for ``organsam segment`` on ``inp`` (a path relative to tmp, or absolute)."""

    def build(tmp: Path) -> list[str]:
        args = [
            "segment",
            "-i",
            str(inp if Path(str(inp)).is_absolute() or str(inp) == "" else tmp / inp),
            "-o",
            str(tmp / "out") if out is None else out.format(tmp=tmp),
            "-q",
        ]
        return args + (["--organs", organs] if organs is not None else []) + list(extra)

    return build


def made(make: Callable[[Path], Path], *extra: str, organs: str | None = "liver", out: str | None = None) -> Build:
    """Make the input with ``make(tmp)``, then run ``organsam segment`` on it."""

    def build(tmp: Path) -> list[str]:
        return seg(make(tmp), *extra, organs=organs, out=out)(tmp)

    return build


def _write(tmp: Path, name: str, content: bytes) -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name


def _pixdim_zero(tmp: Path) -> Path:
    img = _amos()
    h = img.header.copy()
    h["sform_code"], h["qform_code"] = 0, 1
    h.set_data_dtype(np.int16)
    src = tmp / "q.nii"
    nib.save(nib.Nifti1Image(_ct(tmp), None, h), str(src))
    raw = bytearray(src.read_bytes())
    struct.pack_into("<f", raw, 88, 0.0)  # pixdim[3]: the slice thickness
    return _write(tmp, "zero_voxel.nii", bytes(raw))


def _nan_affine(tmp: Path) -> Path:
    h = _amos().header.copy()
    h.set_data_dtype(np.int16)
    h["srow_x"] = [np.nan] * 4
    h["sform_code"], h["qform_code"] = 1, 0
    out = tmp / "nan_affine.nii.gz"
    nib.save(nib.Nifti1Image(_ct(tmp), None, h), str(out))
    return out


def _zero_column_affine(tmp: Path) -> Path:
    h = _amos().header.copy()
    h.set_data_dtype(np.int16)
    h["srow_z"] = [0.0, 0.0, 0.0, 10.0]
    h["sform_code"], h["qform_code"] = 1, 0
    out = tmp / "flat_affine.nii.gz"
    nib.save(nib.Nifti1Image(_ct(tmp), None, h), str(out))
    return out


def _labels(tmp: Path) -> Path:
    shutil.copy(data_path("amos_0013_slab", "label.nii.gz"), tmp / "label.nii.gz")
    return tmp / "label.nii.gz"


def _mask(tmp: Path) -> Path:
    lab = np.asarray(nib.load(str(data_path("amos_0013_slab", "label.nii.gz"))).dataobj)
    return _nifti(tmp, "liver_mask.nii.gz", (lab == 6).astype(np.uint8))


def _png(tmp: Path, ext: str) -> Path:
    from PIL import Image

    sl = np.clip((_ct(tmp)[:, :, 5].astype(float) + 160) / 400 * 255, 0, 255).astype(np.uint8)
    out = tmp / f"slice.{ext}"
    Image.fromarray(sl).save(out)
    return out


def _dicom_copy(tmp: Path) -> Path:
    folder = tmp / "series"
    shutil.copytree(data_path("ts_b_dicom", "dicom"), folder)
    return folder


def _two_series(tmp: Path) -> Path:
    import pydicom

    folder = _dicom_copy(tmp)
    for f in sorted(folder.iterdir())[:5]:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.save_as(f)
    return folder


def _dicom_text_only(tmp: Path) -> Path:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    (folder / "IM0001.dcm").write_bytes(b"not a dicom file")
    return folder


def _npz(tmp: Path, **arrays: np.ndarray) -> Path:
    out = tmp / "case.npz"
    np.savez(out, **arrays)
    return out


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.nii.gz")
    return tmp / "pipe.nii.gz"


def _loop(tmp: Path) -> Path:
    (tmp / "loop.nii.gz").symlink_to(tmp / "loop.nii.gz")
    return tmp / "loop.nii.gz"


def _dangling(tmp: Path) -> Path:
    (tmp / "gone.nii.gz").symlink_to(tmp / "removed.nii.gz")
    return tmp / "gone.nii.gz"


def _amos_copy(tmp: Path) -> Path:
    shutil.copy(data_path("amos_0013_slab", "image.nii.gz"), tmp / "ct.nii.gz")
    return tmp / "ct.nii.gz"


def _out_with(tmp: Path, what: str) -> str:
    """An output place of the kind ``what``."""
    out = tmp / "out"
    if what == "file":
        out.write_text("a file")
    elif what == "foreign":
        out.mkdir()
        (out / "thesis.docx").write_text("keep me")
    elif what == "loop":
        out.symlink_to(out)
    elif what == "readonly":
        (tmp / "ro").mkdir()
        (tmp / "ro").chmod(0o500)
        out = tmp / "ro" / "out"
    return str(out)


def with_out(what: str) -> Build:
    def build(tmp: Path) -> list[str]:
        return ["segment", "-i", str(_amos_copy(tmp)), "-o", _out_with(tmp, what), "--organs", "liver", "-q"]

    return build


def _checkpoint_text(tmp: Path) -> Path:
    return _write(tmp, "model.pth", b"not a checkpoint")


CASES: list[Case] = [
    # ---- the input path
    Case("missing file", seg("nothing_here.nii.gz"), ("does not exist",)),
    Case("empty input path", seg(""), ("empty path",), names_file=False),
    Case(
        "empty output path",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), out=""),
        ("empty path",),
        names_file=False,
    ),
    Case("named pipe", made(_fifo), ("named pipe",)),
    Case("symbolic link loop", made(_loop), ("leads nowhere",)),
    Case("dangling symbolic link", made(_dangling), ("leads nowhere",)),
    Case("unknown file type", made(lambda t: _write(t, "scan.xyz", b"\x00" * 100)), ("unknown",)),
    Case(
        "text file named .nii.gz", made(lambda t: _write(t, "notes.nii.gz", b"hello, not an image\n" * 20)), ("NIfTI",)
    ),
    Case("empty file", made(lambda t: _write(t, "empty.nii.gz", b"")), ("NIfTI",)),
    Case(
        "truncated NIfTI",
        made(lambda t: _write(t, "cut.nii.gz", data_path("amos_0013_slab", "image.nii.gz").read_bytes()[:30_000])),
        ("truncated",),
    ),
    Case("random bytes as .nii", made(lambda t: _write(t, "noise.nii", os.urandom(4096))), ("NIfTI",)),
    Case("gzip of garbage", made(lambda t: _write(t, "junk.nii.gz", gzip.compress(os.urandom(2000)))), ("NIfTI",)),
    # ---- the image's shape and values
    Case("2D image", made(lambda t: _nifti(t, "flat.nii.gz", _ct(t)[:, :, 0])), ("2D",)),
    Case("4D time series", made(lambda t: _nifti(t, "fmri.nii.gz", np.stack([_ct(t)] * 2, -1))), ("4D",)),
    Case("complex values", made(lambda t: _nifti(t, "complex.nii.gz", _ct(t).astype(np.complex64))), ("complex",)),
    Case("all NaN", made(lambda t: _nifti(t, "nan.nii.gz", np.full(_ct(t).shape, np.nan, np.float32))), ("NaN",)),
    Case(
        "signed 8-bit data",
        made(lambda t: _nifti(t, "int8.nii.gz", (_ct(t) // 10).clip(-128, 127).astype(np.int8))),
        ("signed 8-bit",),
    ),
    Case("label map as input", made(_labels), ("label map",)),
    Case("binary mask as input", made(_mask), ("label map or mask",)),
    Case("blank volume", made(lambda t: _nifti(t, "blank.nii.gz", np.zeros(_ct(t).shape, np.int16))), ("blank",)),
    Case("constant volume", made(lambda t: _nifti(t, "const.nii.gz", np.full(_ct(t).shape, 40, np.int16))), ("blank",)),
    Case(
        "values around 1e30",
        made(lambda t: _nifti(t, "huge.nii.gz", np.where(_ct(t) > 0, 1e30, 0).astype(np.float32))),
        ("scale factor",),
    ),
    Case("NaN affine", made(_nan_affine), ("NaN",)),
    Case("zero slice thickness", made(_pixdim_zero), ("zero voxel size",)),
    Case("degenerate affine", made(_zero_column_affine), ("degenerate affine",)),
    Case("three slices", made(lambda t: _nifti(t, "three.nii.gz", _ct(t)[:, :, 4:7])), ("3 slice",)),
    Case("one slice", made(lambda t: _nifti(t, "one.nii.gz", _ct(t)[:, :, 4:5])), ("slice",)),
    Case("PNG picture", made(lambda t: _png(t, "png")), ("1 slice",)),
    Case("JPEG picture", made(lambda t: _png(t, "jpg")), ("1 slice",)),
    Case("MR passed as CT", seg(str(data_path("ts_mr", "image.nii.gz")), "--modality", "CT"), ("image.nii.gz",)),
    # ---- DICOM
    Case("two series in one folder", made(_two_series), ("2 DICOM series", "--series-uid")),
    Case("series UID not in the folder", made(_dicom_copy, "--series-uid", "1.2.3.4"), ("1.2.3.4",)),
    Case("folder without images", made(_dicom_text_only), ("no volumes found",)),
    Case("DICOM SEG given as the image", seg(str(data_path("dcmqi_ct3slice", "liver_SEG.dcm"))), ("SEG",)),
    # ---- challenge npz
    Case("npz without images", made(lambda t: _npz(t, gts=np.zeros((4, 8, 8), np.uint8))), ("imgs",)),
    Case("npz with 1D images", made(lambda t: _npz(t, imgs=np.zeros(100, np.float32))), ("case.npz",)),
    # ---- the prompt
    Case(
        "unknown organ",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs="livr"),
        ("unknown organ", "liver"),
        names_file=False,
    ),
    Case(
        "empty prompt",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs=""),
        ("no organ", "--organs"),
        names_file=False,
    ),
    Case(
        "prompt of filler words",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs="the and of"),
        ("no organ",),
        names_file=False,
    ),
    Case(
        "side without an organ",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs="liver, left"),
        ("left",),
        names_file=False,
    ),
    Case(
        "words in another script",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs="腎臓 and spleen"),
        ("腎臓", "English"),
        names_file=False,
    ),
    Case(
        "10,000-character prompt",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs="liver " + "x" * 10_000),
        ("unknown organ",),
        names_file=False,
    ),
    Case(
        "terminal escape bytes",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs="liver \x1b[31mbogus"),
        ("unknown organ",),
        names_file=False,
    ),
    # ---- options
    Case(
        "CUDA on a CPU build",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--device", "cuda"),
        ("cuda",),
        names_file=False,
    ),
    Case(
        "unknown device",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--device", "tpu"),
        ("tpu",),
        names_file=False,
    ),
    Case(
        "--min-slice-mm nan",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--min-slice-mm", "nan"),
        ("min", "nan"),
        names_file=False,
    ),
    Case(
        "--min-slice-mm -5",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--min-slice-mm", "-5"),
        ("min",),
        names_file=False,
    ),
    Case(
        "--min-slice-mm inf",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--min-slice-mm", "inf"),
        ("min",),
        names_file=False,
    ),
    Case(
        "unknown design",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--design", "unet"),
        ("unet",),
        names_file=False,
    ),
    Case(
        "missing checkpoint",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--checkpoint", "/nonexistent/model.pth"),
        ("model.pth",),
        names_file=False,
    ),
    Case(
        "checkpoint that is not one",
        lambda t: seg(_amos_copy(t), "--checkpoint", str(_checkpoint_text(t)))(t),
        ("model.pth",),
        names_file=False,
    ),
    Case(
        "missing organ prompt table",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--organ-prompts", "/nonexistent/table.safetensors"),
        ("table.safetensors",),
        names_file=False,
    ),
    Case(
        "unknown modality",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--modality", "PET"),
        ("PET",),
        names_file=False,
    ),
    Case(
        "zero workers",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--workers", "0"),
        ("workers",),
        names_file=False,
    ),
    Case(
        "--organs and --all together",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), "--all"),
        ("--all",),
        names_file=False,
    ),
    Case(
        "neither --organs nor --all",
        seg(str(data_path("amos_0013_slab", "image.nii.gz")), organs=None),
        ("--organs",),
        names_file=False,
    ),
    # ---- the output place
    Case("output is an existing file", with_out("file"), ("out",), names_file=False),
    Case("output folder holds other files", with_out("foreign"), ("thesis.docx",), names_file=False),
    Case("output is a symbolic link loop", with_out("loop"), ("out",), names_file=False),
    Case("output in a read-only folder", with_out("readonly"), ("ro",), names_file=False),
    Case(
        "output is the input file",
        lambda t: ["segment", "-i", str(_amos_copy(t)), "-o", str(t / "ct.nii.gz"), "--organs", "liver", "-q"],
        ("ct.nii.gz",),
    ),
    Case(
        "output is the DICOM input folder",
        lambda t: ["segment", "-i", str(_dicom_copy(t)), "-o", str(t / "series"), "--organs", "liver", "-q"],
        ("series",),
    ),
    # ---- batches
    Case(
        "empty batch folder",
        lambda t: [
            "segment",
            "-i",
            str((t / "cases").mkdir() or t / "cases"),
            "-o",
            str(t / "out"),
            "--organs",
            "liver",
            "-q",
        ],
        ("cases",),
    ),
    Case(
        "manifest listing a missing file",
        lambda t: [
            "segment",
            "-i",
            str(_write(t, "cases.txt", f"{t / 'missing.nii.gz'}\n".encode())),
            "-o",
            str(t / "out"),
            "--organs",
            "liver",
            "-q",
        ],
        ("missing.nii.gz", "does not exist"),
        names_file=False,
    ),
    Case(
        "batch with an unknown organ",
        lambda t: [
            "segment",
            "-i",
            str(_write(t, "cases.txt", f"{data_path('amos_0013_slab', 'image.nii.gz')}\n".encode())),
            "-o",
            str(t / "out"),
            "--organs",
            "livr",
            "-q",
        ],
        ("unknown organ",),
        names_file=False,
    ),
]


def test_the_table_covers_at_least_sixty_classes() -> None:
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_in_one_line(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case.name == "output in a read-only folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    argv = case.build(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert len(lines) == 1, err
    line = lines[0]
    assert "Traceback" not in err and "\x1b" not in line and len(line) < 700, line
    for s in case.says:
        assert s.format(tmp=tmp_path) in line, (s, line)
    if case.names_file:
        target = Path(argv[argv.index("-i") + 1])
        assert target.name in line, line
    after = sorted(p.name for p in tmp_path.iterdir())
    assert set(after) <= set(before) | {"out"} and not (tmp_path / "out" / "segmentation.nii.gz").exists()


def test_warnings_for_inputs_that_are_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Read, with a warning: qform and sform that disagree, CT values read as MR, +Inf voxels (set to the maximum,
    not the minimum)."""
    from organsam.io import load_volume

    h = _amos().header.copy()
    h.set_data_dtype(np.int16)
    h["qform_code"], h["sform_code"] = 1, 1
    h["srow_x"][3] += 50
    nib.save(nib.Nifti1Image(_ct(tmp_path), None, h), str(tmp_path / "disagree.nii.gz"))
    with caplog.at_level("WARNING"):
        load_volume(tmp_path / "disagree.nii.gz")
    assert "qform and sform disagree" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_volume(data_path("amos_0013_slab", "image.nii.gz"), modality="MR").modality == "MR"
    assert "look like CT Hounsfield units" in caplog.text
    ct = _ct(tmp_path).astype(np.float32)
    ct[0, 0, 0] = np.inf
    vol = load_volume(_nifti(tmp_path, "inf.nii.gz", ct))
    assert vol.array.max() == ct[np.isfinite(ct)].max()


def test_a_sheared_grid_gives_volumes_from_the_determinant(tmp_path: Path) -> None:
    from organsam.io import load_volume

    shear = np.array([[0.8, 0.4, 0, 0], [0, 0.8, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]])
    vol = load_volume(_nifti(tmp_path, "tilt.nii.gz", _ct(tmp_path), shear))
    assert vol.voxel_ml == pytest.approx(0.8 * 0.8 * 5.0 / 1000)  # |det|, not the product of column norms
    assert np.prod(vol.spacing) / 1000 > vol.voxel_ml * 1.1


def test_unreadable_files_in_a_dicom_series_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from organsam.io import load_volume

    folder = _dicom_copy(tmp_path)
    (folder / "broken.dcm").write_bytes(b"DICM" + b"\x00" * 10)
    with caplog.at_level("WARNING"):
        vol = load_volume(folder)
    assert vol.array.shape[0] == 20 and "broken.dcm" in caplog.text
