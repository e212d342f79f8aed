"""JSON errors of the API: every bad request is answered ``{"error": code, "detail": message, ...}`` with a 4xx
status (:class:`ApiError` and the handlers :func:`install_error_handlers` adds for the library's own errors)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from organsam.server.jobs import QueueFullError
from organsam.server.schemas import ErrorBody
from organsam.server.sessions import ServerBusyError, SessionNotFoundError
from organsam.server.uploads import UploadError
from organsam.vocabulary import UnknownOrganError
from organsam.vocabulary.parse import PromptError

__all__ = ["ERROR_RESPONSES", "ApiError", "error_response", "install_error_handlers"]

#: the error statuses documented on every route
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorBody} for c in (400, 404, 409, 413, 415, 422, 429, 503)
}


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "detail": detail, ...extra}`` with ``status``."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.extra = status, code, detail, headers, extra


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The JSON error body (``None`` extras left out)."""
    body = {"error": code, "detail": detail, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer the library's errors (unknown organ, bad upload, missing session, busy server, invalid request)
    as JSON errors."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.detail, e.headers, **e.extra)

    @app.exception_handler(UnknownOrganError)
    async def _unknown_organ(_: Request, e: UnknownOrganError) -> JSONResponse:
        return error_response(422, "unknown_organ", str(e), suggestions=e.suggestions, term=e.term)

    @app.exception_handler(PromptError)
    async def _prompt_error(_: Request, e: PromptError) -> JSONResponse:
        return error_response(422, "bad_prompt", str(e))

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, e: UploadError) -> JSONResponse:
        return error_response(e.status, e.code, str(e))

    @app.exception_handler(SessionNotFoundError)
    async def _no_session(_: Request, e: SessionNotFoundError) -> JSONResponse:
        return error_response(
            404,
            "no_such_session",
            "no session with this id (it may have expired or been deleted); upload the volume again",
        )

    @app.exception_handler(ServerBusyError)
    async def _busy(_: Request, e: ServerBusyError) -> JSONResponse:
        status = 429 if isinstance(e, QueueFullError) else 503
        return error_response(
            status,
            "queue_full" if status == 429 else "server_busy",
            str(e),
            {"Retry-After": str(e.retry_after_s)},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail), getattr(e, "headers", None))
