"""Server health and the vocabulary: ``/api/health``, ``/api/organs``, ``/api/parse``."""

from __future__ import annotations

from fastapi import APIRouter

from organsam.inference.options import resolve_organs
from organsam.server.deps import Queue, Settings, Store
from organsam.server.schemas import HealthOut, OrganOut, ParseIn, ParseOut
from organsam.vocabulary import UnknownOrganError, load_vocabulary

router = APIRouter()


@router.get("/api/health", response_model=HealthOut, tags=["server"])
def health(store: Store, queue: Queue, settings: Settings) -> HealthOut:
    """Liveness and load: sessions, queued jobs, whether the model is loaded."""
    running = queue.running
    return HealthOut(
        status="ok",
        model_loaded=queue.model_loaded,
        sessions=len(store),
        max_sessions=settings.max_sessions,
        queued_jobs=queue.queued,
        running_job=running.id if running is not None else None,
    )


@router.get("/api/organs", response_model=list[OrganOut], tags=["vocabulary"])
def organs() -> list[OrganOut]:
    """Every organ of the vocabulary (id and name)."""
    return [OrganOut(id=o.id, name=o.name) for o in load_vocabulary()]


@router.post("/api/parse", response_model=ParseOut, tags=["vocabulary"])
def parse(body: ParseIn) -> ParseOut:
    """Resolve a free-text prompt to organs; unknown words give 422 with the parser's suggestions."""
    vocab = load_vocabulary()
    try:
        ids = resolve_organs(body.text).organ_ids
    except UnknownOrganError:
        raise
    except ValueError:  # names no organ: nothing to show
        ids = ()
    return ParseOut(organs=[OrganOut(id=i, name=vocab[i].name) for i in ids])
