"""Viewer corrections: points (any view) and boxes (axial) in slice-image pixels, applied by the next run."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from organsam.server.deps import SessionId, Store, check_slice, resolve_one_organ
from organsam.server.errors import ApiError
from organsam.server.render import display_to_voxel, view_info
from organsam.server.schemas import CorrectionIn, CorrectionOut
from organsam.server.sessions import Correction, Session

router = APIRouter(tags=["corrections"])

#: corrections one session may hold
MAX_CORRECTIONS = 500


def _bad(detail: str) -> ApiError:
    return ApiError(422, "bad_correction", detail)


def to_correction(s: Session, body: CorrectionIn) -> Correction:
    """Translate a correction drawn on a slice image into canonical voxel coordinates."""
    organ = resolve_one_organ(body.organ)
    check_slice(s, body.view, body.index)
    info = view_info(s.volume.shape, s.volume.spacing)[body.view]
    W, H = info["width"], info["height"]
    if body.kind == "point":
        if body.x is None or body.y is None:
            raise _bad("a point needs x (column) and y (row) in the slice image")
        if not (0 <= body.x < W and 0 <= body.y < H):
            raise _bad(f"point ({body.x}, {body.y}) is outside the {body.view} image of {W}x{H} pixels")
        z, y, x = display_to_voxel(s.volume.shape, body.view, body.index, body.x, body.y)
        return Correction(organ=organ, kind="point", z=int(round(z)), y=float(y), x=float(x), label=body.label)
    if body.view != "axial":
        raise _bad("boxes are drawn on the axial view (the model segments axial slices); place a point on other views")
    if body.box is None:
        raise _bad("a box needs box = [col0, row0, col1, row1]")
    c0, r0, c1, r1 = body.box
    c0, c1 = sorted((max(0.0, min(c0, W - 1)), max(0.0, min(c1, W - 1))))
    r0, r1 = sorted((max(0.0, min(r0, H - 1)), max(0.0, min(r1, H - 1))))
    if c1 - c0 < 2 or r1 - r0 < 2:
        raise _bad("the box is too small (at least 2 pixels each way inside the image)")
    Y = s.volume.shape[1]
    return Correction(organ=organ, kind="box", z=body.index, box=(c0, Y - 1 - r1, c1, Y - 1 - r0))


@router.get("/api/sessions/{sid}/corrections", response_model=list[CorrectionOut])
def list_corrections(sid: SessionId, store: Store) -> list[CorrectionOut]:
    """The correction points/boxes of the session (canonical voxel coordinates)."""
    return [CorrectionOut(**c.as_dict()) for c in store.get(sid).corrections]


@router.post("/api/sessions/{sid}/corrections", response_model=list[CorrectionOut], status_code=201)
def add_correction(sid: SessionId, body: CorrectionIn, store: Store) -> list[CorrectionOut]:
    """Add a point (any view) or a box (axial view) in slice-image pixels; applied by the next segment run."""
    s = store.get(sid)
    corr = to_correction(s, body)
    with s.lock:
        if len(s.corrections) >= MAX_CORRECTIONS:
            raise ApiError(
                422, "too_many_corrections", f"at most {MAX_CORRECTIONS} corrections per session; clear them first"
            )
        s.corrections.append(corr)
        return [CorrectionOut(**c.as_dict()) for c in s.corrections]


@router.delete("/api/sessions/{sid}/corrections", status_code=204)
def clear_corrections(sid: SessionId, store: Store) -> Response:
    """Forget every correction (the next run uses the text prompt alone)."""
    s = store.get(sid)
    with s.lock:
        s.corrections = []
    return Response(status_code=204)
