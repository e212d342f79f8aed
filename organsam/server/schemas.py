"""JSON bodies of the HTTP API (pydantic models; they also document the API on ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "CorrectionIn",
    "CorrectionOut",
    "ErrorBody",
    "HealthOut",
    "JobOut",
    "OrganOut",
    "OrganRow",
    "ParseIn",
    "ParseOut",
    "ResultOut",
    "SegmentIn",
    "SessionOut",
    "ViewOut",
]

View = Literal["axial", "coronal", "sagittal"]


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: str = Field(description="short machine-readable reason, e.g. 'unknown_organ', 'too_large'")
    detail: str = Field(description="what is wrong and how to fix it")
    suggestions: list[str] | None = Field(default=None, description="close organ names for an unknown term")
    term: str | None = Field(default=None, description="the prompt words that were not understood")


class ViewOut(BaseModel):
    count: int = Field(description="number of slices along this view's axis")
    width: int = Field(description="slice image width in pixels")
    height: int = Field(description="slice image height in pixels")
    pixel_w_mm: float
    pixel_h_mm: float
    file_axis: str = Field(default="", description="the input's voxel axis (i, j or k) the slices step along")
    file_reversed: bool = Field(default=False, description="the input numbers these slices the other way")


class VoxelOut(BaseModel):
    """One voxel: its value and where it is."""

    zyx: list[int] = Field(description="canonical (z, y, x) index, as the viewer's cursor")
    ijk: list[int] = Field(description="the input file's (i, j, k) voxel index, as ITK, 3D Slicer and ITK-SNAP show")
    value: float = Field(description="the stored value: Hounsfield units on CT")
    unit: str = Field(description="'HU' on CT, empty on MR")
    organs: list[str] = Field(description="organs of the current result drawn on this voxel")


class JobOut(BaseModel):
    """A segmentation job (poll ``GET /api/jobs/{id}`` until ``state`` is done, failed or cancelled)."""

    id: str
    session_id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str = Field(description="what the job is doing now, in words")
    progress: float = Field(ge=0.0, le=1.0)
    slices_done: int
    slices_total: int
    queue_position: int | None = Field(default=None, description="jobs ahead of this one (queued jobs only)")
    organs: list[str]
    error: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None


class SessionOut(BaseModel):
    """An uploaded volume and what has been done with it."""

    id: str
    filename: str = Field(description="the uploaded file's name (display only; never used as a path)")
    kind: str = Field(description="what the upload was recognised as: nifti, nifti_gz, npz or dicom_zip")
    shape_zyx: list[int]
    spacing_zyx_mm: list[float]
    modality: str
    windows: list[str] = Field(description="window presets for the slice images")
    default_window: str
    window_levels: dict[str, list[float]] = Field(description="(level, width) of each window preset")
    views: dict[str, ViewOut]
    prompt: str | None = None
    organs: list[str] = Field(description="organ ids of the last prompt")
    job: JobOut | None = None
    has_result: bool
    result_version: int = Field(description="increases with each finished segmentation")
    corrections: int = Field(description="number of correction prompts (points/boxes) waiting or applied")
    expires_in_s: float


class SegmentIn(BaseModel):
    """Start (or re-run) the segmentation of a session."""

    prompt: str | None = Field(
        default=None,
        max_length=1000,
        description="free text, e.g. 'liver and both kidneys'; omit to re-run the last "
        "prompt with the current corrections",
    )


class ParseIn(BaseModel):
    text: str = Field(max_length=1000)


class OrganOut(BaseModel):
    id: str
    name: str


class ParseOut(BaseModel):
    organs: list[OrganOut]


class CorrectionIn(BaseModel):
    """A correction on a slice image, in that image's pixel coordinates (as served by the slice endpoint).

    A point may be placed on any view (it is applied on the axial slice through it); a box only on the
    axial view. ``label`` 1 adds the spot to the organ, 0 removes it.
    """

    organ: str = Field(max_length=100, description="organ id or name, e.g. 'liver' or 'left kidney'")
    kind: Literal["point", "box"]
    view: View = "axial"
    index: int = Field(ge=0, description="slice index in that view")
    x: float | None = Field(default=None, description="point: column in the slice image")
    y: float | None = Field(default=None, description="point: row in the slice image")
    label: Literal[0, 1] = 1
    box: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="box: [col0, row0, col1, row1] in the axial slice image",
    )


class CorrectionOut(BaseModel):
    """A stored correction in canonical voxel coordinates (z inferior->superior, y posterior->anterior,
    x patient right->left)."""

    organ: str
    kind: Literal["point", "box"]
    z: int
    y: float | None = None
    x: float | None = None
    label: int | None = None
    box_xyxy: list[float] | None = Field(default=None, description="box on axial slice z: [x0, y0, x1, y1]")


class OrganRow(BaseModel):
    id: str
    name: str
    label: int
    color: str = Field(description="#rrggbb")
    present: bool
    volume_ml: float
    confidence: float
    mean_hu: float | None = None


class ResultOut(BaseModel):
    version: int
    organs: list[OrganRow]
    report: dict[str, Any]


class HealthOut(BaseModel):
    status: str
    model_loaded: bool
    sessions: int
    max_sessions: int
    queued_jobs: int
    running_job: str | None
