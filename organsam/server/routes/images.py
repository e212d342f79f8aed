"""Slice images and organ overlays as PNG, in display orientation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from organsam.server.deps import RenderGate, SessionId, Store, View, check_slice, organ_colors
from organsam.server.errors import ApiError
from organsam.server.render import overlay_rgba, png_bytes
from organsam.server.schemas import VoxelOut

router = APIRouter(tags=["images"])
_PNG = {200: {"content": {"image/png": {}}}}


@router.get("/api/sessions/{sid}/views/{view}/{index}/image.png", responses=_PNG, response_class=Response)
def slice_image(
    sid: SessionId,
    view: View,
    index: int,
    store: Store,
    render_gate: RenderGate,
    window: Annotated[
        str, Query(max_length=40, description="auto, abdomen, bone, lung, raw, or LEVEL,WIDTH (e.g. 40,400)")
    ] = "auto",
) -> Response:
    """One slice as a grey PNG in display orientation (axial: anterior up, patient right on the left)."""
    s = store.get(sid)
    check_slice(s, view, index)
    with render_gate:
        try:
            img = s.display_slice(view, index, window)
        except ValueError as e:
            raise ApiError(422, "bad_window", str(e)) from e
        png = png_bytes(img)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})


@router.get("/api/sessions/{sid}/views/{view}/{index}/overlay.png", responses=_PNG, response_class=Response)
def slice_overlay(
    sid: SessionId,
    view: View,
    index: int,
    store: Store,
    render_gate: RenderGate,
    organs: Annotated[
        str | None, Query(max_length=2000, description="comma-separated organ ids to show (default: all)")
    ] = None,
) -> Response:
    """The coloured organ overlay of a slice as an RGBA PNG of the same size (transparent before a result)."""
    s = store.get(sid)
    check_slice(s, view, index)
    res, version = s.result, s.result_version
    masks = res.masks if res is not None else {}
    visible = None
    if organs is not None:
        visible = [o for o in organs.split(",") if o]
        unknown = [o for o in visible if o not in masks]
        if unknown and res is not None:
            raise ApiError(
                422, "bad_organ", f"not in this result: {', '.join(unknown[:5])}; the result has {', '.join(masks)}"
            )
    with render_gate:
        colors = organ_colors(res.label_table) if res is not None else {}
        png = png_bytes(overlay_rgba(masks, colors, s.volume.shape, view, index, visible))
    return Response(
        png, media_type="image/png", headers={"Cache-Control": "no-cache", "X-Result-Version": str(version)}
    )


@router.get("/api/sessions/{sid}/voxel", response_model=VoxelOut)
def voxel_value(
    sid: SessionId,
    store: Store,
    z: Annotated[int, Query(description="canonical slice (inferior to superior)")],
    y: Annotated[int, Query(description="canonical row (posterior to anterior)")],
    x: Annotated[int, Query(description="canonical column (patient right to left)")],
) -> VoxelOut:
    """The value under the cursor (HU on CT), the input file's (i, j, k) voxel index and the organs drawn there."""
    s = store.get(sid)
    try:
        return VoxelOut(**s.voxel_value(z, y, x))
    except IndexError as e:
        raise ApiError(422, "bad_voxel", str(e)) from e
