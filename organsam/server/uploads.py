"""Uploaded files: type detection by content, safe unpacking of zipped DICOM series.

Nothing here uses a name or path sent by the client: files are stored under names the server makes up
(``upload.nii.gz``, ``dicom/00000.dcm``, ...), so a crafted name (``../../etc/passwd``, an absolute path,
a zip member with ``..``) never reaches the file system.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

__all__ = [
    "UploadError",
    "UploadTooLargeError",
    "copy_limited",
    "detect_kind",
    "safe_display_name",
    "store_upload",
    "unpack_dicom_zip",
]

#: kind -> name of the stored file (or folder) inside the session folder
STORED_NAMES = {"nifti": "upload.nii", "nifti_gz": "upload.nii.gz", "npz": "upload.npz", "dicom_zip": "dicom"}
_CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that cannot be used; the message says what is wrong and what to send instead.

    Attributes:
        status: HTTP status to answer with (400, 413 or 415).
        code: short machine-readable reason.
    """

    def __init__(self, message: str, status: int = 400, code: str = "bad_upload") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class UploadTooLargeError(UploadError):
    """The upload (or what a zip unpacks to) is over the configured limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=413, code="too_large")


def safe_display_name(name: str | None) -> str:
    """A client file name reduced to something safe to show and log (never used as a path).

    Args:
        name: the name the client sent (may be None, a path, or contain odd characters).

    Returns:
        The last path component with anything but letters, digits, ``._-+`` and spaces replaced, at most
        100 characters; ``"upload"`` when nothing is left.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._+\- ]", "_", base).strip(" .")
    return base[:100] or "upload"


def copy_limited(src: BinaryIO, dest: Path, limit: int) -> int:
    """Copy a stream to ``dest`` in chunks, stopping with :class:`UploadTooLargeError` past ``limit`` bytes.

    Returns:
        The number of bytes written.
    """
    n = 0
    with open(dest, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > limit:
                raise UploadTooLargeError(
                    f"the upload is larger than the server's limit of {limit / 2**20:.0f} MiB; "
                    "crop the volume or restart the server with a larger --max-upload-mb"
                )
            out.write(chunk)
    return n


def _nifti_header_kind(head: bytes) -> str | None:
    """'n+1'/'n+2' for a single-file NIfTI header, 'pair' for a .hdr/.img header, None otherwise."""
    if len(head) >= 348:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 348:
                magic = head[344:348]
                if magic == b"n+1\x00":
                    return "n+1"
                if magic == b"ni1\x00":
                    return "pair"
    if len(head) >= 12:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 540:
                magic = head[4:8]
                if magic == b"n+2\x00":
                    return "n+2"
                if magic == b"ni2\x00":
                    return "pair"
    return None


def detect_kind(path: Path) -> str:
    """What an uploaded file is, judged by its bytes (never by its name).

    Args:
        path: the stored upload.

    Returns:
        ``"nifti"``, ``"nifti_gz"``, ``"npz"`` or ``"dicom_zip"``.

    Raises:
        UploadError: (415) anything else, with a message naming what was recognised.
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        raise UploadError("the uploaded file is empty", status=400, code="empty_upload")
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(1024)
        except (OSError, EOFError, zlib.error) as e:
            raise UploadError(f"the upload is a broken gzip file ({e})", status=400, code="corrupt_upload") from e
        kind = _nifti_header_kind(inner)
        if kind in ("n+1", "n+2"):
            return "nifti_gz"
        if kind == "pair":
            raise UploadError(
                "the upload is a NIfTI header (.hdr) without its image: convert the .hdr/.img pair to one .nii.gz file",
                status=415,
                code="unsupported_type",
            )
        raise UploadError(
            "the upload is gzip-compressed but not a NIfTI image; send a .nii.gz, a .npz or a zip of one DICOM series",
            status=415,
            code="unsupported_type",
        )
    kind = _nifti_header_kind(head)
    if kind in ("n+1", "n+2"):
        return "nifti"
    if kind == "pair":
        raise UploadError(
            "the upload is a NIfTI header (.hdr) without its image: convert the .hdr/.img pair to one .nii.gz file",
            status=415,
            code="unsupported_type",
        )
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as e:
            raise UploadError(f"the upload is a broken zip file ({e})", status=400, code="corrupt_upload") from e
        if not names:
            raise UploadError("the uploaded zip is empty", status=400, code="empty_upload")
        if "imgs.npy" in names:
            return "npz"
        if all(n.endswith(".npy") for n in names):
            raise UploadError(
                "the upload is a .npz without an 'imgs' array; organsam reads challenge-style "
                "npz files with 'imgs' (Z, Y, X) and 'spacing'",
                status=415,
                code="unsupported_type",
            )
        return "dicom_zip"
    if len(head) >= 132 and head[128:132] == b"DICM":
        raise UploadError(
            "the upload is a single DICOM file (one slice); zip the folder of the whole series and upload the zip",
            status=415,
            code="unsupported_type",
        )
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        raise UploadError(
            "the upload is a 2D picture (PNG/JPEG); the viewer segments 3D volumes: send a NIfTI, "
            "a .npz or a zipped DICOM series",
            status=415,
            code="unsupported_type",
        )
    raise UploadError(
        "the upload is not a NIfTI (.nii/.nii.gz), a .npz or a zipped DICOM series "
        "(the file type is checked by its content, not its name)",
        status=415,
        code="unsupported_type",
    )


def _is_dicom_member(name: str) -> bool:
    base = re.split(r"[\\/]", name)[-1]
    return not (name.startswith("__MACOSX/") or base.startswith(".") or base.upper() == "DICOMDIR")


def unpack_dicom_zip(path: Path, dest: Path, *, max_bytes: int, max_files: int) -> int:
    """Unpack the DICOM files of a zip into ``dest`` as ``00000.dcm``, ``00001.dcm``, ...

    Member names are only used to skip obvious non-images (``__MACOSX/``, hidden files, ``DICOMDIR``); they
    never become paths. Members without the ``DICM`` marker at byte 128 are skipped.

    Args:
        path: the uploaded zip.
        dest: an empty folder made by the server.
        max_bytes: cap on the total unpacked size (guards against zip bombs; checked on the bytes
            actually inflated, not on the sizes the zip claims).
        max_files: cap on the number of members.

    Returns:
        The number of DICOM files written.

    Raises:
        UploadError: corrupt zip, too many/too large members (413), or no DICOM file inside (415).
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and _is_dicom_member(i.filename)]
            if len(infos) > max_files:
                raise UploadTooLargeError(
                    f"the zip holds {len(infos)} files, more than the limit of {max_files}; upload one series at a time"
                )
            for info in infos:
                target = dest / f"{written:05d}.dcm"
                with zf.open(info) as src, open(target, "wb") as out:
                    head = src.read(132)
                    if len(head) < 132 or head[128:132] != b"DICM":
                        out.close()
                        target.unlink()
                        logger.debug("zip member %r is not a DICOM file; skipped", info.filename)
                        continue
                    out.write(head)
                    total += len(head)
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise UploadTooLargeError(
                                f"the zip unpacks to more than the limit of {max_bytes / 2**20:.0f} MiB; "
                                "upload one series, or restart the server with a larger --max-unpacked-mb"
                            )
                        out.write(chunk)
                written += 1
    except UploadError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        zlib.error,
        NotImplementedError,
    ) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise UploadError(f"the zip could not be unpacked ({type(e).__name__}: {e})", code="corrupt_upload") from e
    if written == 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise UploadError(
            "the zip holds no DICOM file (none has the 'DICM' marker); zip the folder of one DICOM series",
            status=415,
            code="unsupported_type",
        )
    return written


def check_unpacked_size(path: Path, kind: str, max_bytes: int) -> None:
    """Refuse a compressed upload that would unpack to more than ``max_bytes`` (a ``.nii.gz`` of zeros that
    unpacks to 1 GB, an npz bomb), counting while decompressing and stopping at the limit."""
    too_big = UploadTooLargeError(
        f"the upload unpacks to more than the limit of {max_bytes / 2**20:.0f} MiB; "
        "crop or downsample the volume, or restart the server with a larger "
        "--max-unpacked-mb"
    )
    try:
        if kind == "nifti_gz":
            total = 0
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise too_big
        elif kind == "npz":
            with zipfile.ZipFile(path) as zf:
                if sum(i.file_size for i in zf.infolist()) > max_bytes:
                    raise too_big
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile):
        return  # damaged: the reader says what is wrong with it


def store_upload(src: Path, session_dir: Path, *, max_unpacked_bytes: int, max_dicom_files: int) -> tuple[str, Path]:
    """Move a received upload into ``session_dir`` under a server-chosen name, unpacking DICOM zips.

    Args:
        src: the received bytes (a file the server wrote).
        session_dir: the session's folder.
        max_unpacked_bytes: see :func:`unpack_dicom_zip`.
        max_dicom_files: see :func:`unpack_dicom_zip`.

    Returns:
        (kind, path to give :func:`organsam.io.load_volume`).
    """
    kind = detect_kind(src)
    target = session_dir / STORED_NAMES[kind]
    check_unpacked_size(src, kind, max_unpacked_bytes)
    if kind == "dicom_zip":
        n = unpack_dicom_zip(src, target, max_bytes=max_unpacked_bytes, max_files=max_dicom_files)
        logger.info("unpacked %d DICOM files", n)
        src.unlink()
    else:
        src.replace(target)
    return kind, target
