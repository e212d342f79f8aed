"""Downloads of the last result: label map, per-organ masks (zip), report, DICOM-SEG."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from organsam.server.deps import SessionId, Store
from organsam.server.errors import ApiError

router = APIRouter(tags=["downloads"])

#: what -> (file name suffix, media type)
DOWNLOADS = {
    "labelmap": ("segmentation.nii.gz", "application/gzip"),
    "masks": ("masks.zip", "application/zip"),
    "report": ("report.json", "application/json"),
    "dicom_seg": ("segmentation.dcm", "application/dicom"),
}


@router.get(
    "/api/sessions/{sid}/download/{what}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download(
    sid: SessionId,
    store: Store,
    what: Annotated[
        str,
        Path(
            pattern="^(labelmap|masks|report|dicom_seg)$",
            description="labelmap (NIfTI), masks (zip of NIfTI per organ), report "
            "(JSON) or dicom_seg (DICOM input only)",
        ),
    ],
) -> FileResponse:
    """The label map NIfTI, the per-organ masks (zip) or the report JSON of the last result, on the input's grid
    and orientation."""
    s = store.get(sid)
    key = "masks_zip" if what == "masks" else what
    with s.lock:
        path = s.files.get(key)
    if s.result is None or path is None:
        raise ApiError(404, "no_result", "no segmentation yet" if s.result is None else f"no {what} for this input")
    fname, media = DOWNLOADS[what]
    stem = s.filename.split(".")[0] or "organsam"
    return FileResponse(path, media_type=media, filename=f"{stem}_{fname}")
