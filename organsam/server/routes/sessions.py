"""Sessions: upload a volume to open one, read it, delete it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from organsam.server.deps import Queue, SessionId, Settings, Store, session_out
from organsam.server.schemas import SessionOut
from organsam.server.sessions import SessionNotFoundError
from organsam.server.uploads import safe_display_name

router = APIRouter(tags=["sessions"])


@router.post("/api/sessions", response_model=SessionOut, status_code=201)
def create_session(
    store: Store,
    queue: Queue,
    settings: Settings,
    file: Annotated[
        UploadFile,
        File(
            description="a NIfTI (.nii/.nii.gz), a challenge .npz, or a zip of one "
            "DICOM series; the type is checked by content"
        ),
    ],
    modality: Annotated[str | None, Form(description="CT, MR or auto (default: from the file)")] = None,
) -> SessionOut:
    """Upload a volume and open a session."""
    name = safe_display_name(file.filename)
    s = store.create(file.file, name, modality)
    return session_out(s, queue, settings)


@router.get("/api/sessions/{sid}", response_model=SessionOut)
def get_session(sid: SessionId, store: Store, queue: Queue, settings: Settings) -> SessionOut:
    """A session: volume geometry, window presets, last prompt, job and result state."""
    return session_out(store.get(sid), queue, settings)


@router.delete("/api/sessions/{sid}", status_code=204)
def delete_session(sid: SessionId, store: Store) -> Response:
    """Delete a session and its files (its job is cancelled)."""
    if not store.delete(sid):
        raise SessionNotFoundError(sid)
    return Response(status_code=204)
