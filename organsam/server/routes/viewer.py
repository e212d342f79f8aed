"""The single-page viewer: ``/`` and its two static files, served from the package (nothing external)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from organsam.server.errors import ApiError
from organsam.server.uploads import safe_display_name

router = APIRouter()

_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _viewer_file(name: str) -> bytes:
    return resources.files("organsam.server").joinpath("viewer", name).read_bytes()


@router.get("/", include_in_schema=False)
def index() -> Response:
    return Response(
        _viewer_file("index.html"),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": _CSP,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    if name not in _STATIC:
        raise ApiError(404, "not_found", f"no static file {safe_display_name(name)!r}")
    return Response(
        _viewer_file(name),
        media_type=_STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
