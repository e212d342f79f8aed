"""Request-body limits enforced while the body streams in."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from organsam.server.errors import error_response

__all__ = ["LOOPBACK_NAMES", "SMALL_BODY", "BodyLimitMiddleware", "HostCheckMiddleware"]

#: Host names a loopback-bound server answers to (a page elsewhere cannot use them: DNS rebinding gets a 400).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: the largest body of a request other than an upload
SMALL_BODY = 1 << 20


class BodyLimitMiddleware:
    """Refuse request bodies over a limit with 413, while they stream in (Content-Length or chunked).

    Uploads (``POST /api/sessions``) may be ``max_upload`` bytes plus multipart overhead; other bodies 1 MiB.
    """

    def __init__(self, app: ASGIApp, max_upload: int) -> None:
        self.app = app
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        upload = scope["path"].rstrip("/") == "/api/sessions"
        limit = self.max_upload + 64 * 1024 if upload else SMALL_BODY
        what = (
            (
                f"the upload is larger than the server's limit of {self.max_upload / 2**20:.0f} MiB; "
                "crop the volume or restart the server with a larger --max-upload-mb"
            )
            if upload
            else f"the request body is larger than {SMALL_BODY // 1024} KiB"
        )
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > limit:
            await error_response(413, "too_large", what, {"Connection": "close"})(scope, receive, send)
            return
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["exceeded"]:
                if msg["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    resp = error_response(413, "too_large", what, {"Connection": "close"})
                    await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
                    await send({"type": "http.response.body", "body": resp.body})
                return
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
            if not state["started"]:
                resp = error_response(413, "too_large", what, {"Connection": "close"})
                await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
                await send({"type": "http.response.body", "body": resp.body})


class HostCheckMiddleware:
    """Answer only requests whose ``Host`` header names this machine (400 otherwise).

    The API has no authentication and is bound to the loopback interface; a web page on another site can still
    reach it by DNS rebinding (its own name resolving to 127.0.0.1), and the Host header then carries that name.
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
            if name not in self.allowed:
                await error_response(
                    400,
                    "bad_host",
                    f"this server answers to {', '.join(sorted(self.allowed))} "
                    "only (it has no authentication); open it as http://127.0.0.1:PORT or "
                    "start it with --allow-host NAME",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)
