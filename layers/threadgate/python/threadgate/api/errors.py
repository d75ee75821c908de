"""The one place that maps errors to HTTP status and the API.md §2 envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from threadgate.domain.errors import GatewayError, InvalidRequest, NotFound

log = logging.getLogger("threadgate.api")

OPENAI_SHAPED_PATHS = ("/v1/chat/completions", "/v1/responses")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def envelope(path: str, err_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    if path.startswith(OPENAI_SHAPED_PATHS):
        return {"error": {"message": message, "type": err_type, "param": param, "code": err_type}}
    return {"type": "error", "error": {"type": err_type, "message": message}}


def error_response(request: Request, err: GatewayError) -> JSONResponse:
    headers = {"retry-after": str(err.retry_after)} if err.retry_after else None
    return JSONResponse(
        envelope(request.url.path, err.type, err.message, err.param), status_code=err.status, headers=headers
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest("malformed JSON body")
    field = _field(tuple(first.get("loc", ())))
    kind = first.get("type")
    if kind == "missing":
        return InvalidRequest(f"{field}: field required", param=field)
    if kind == "extra_forbidden":
        return InvalidRequest(f"{field}: this request cannot change it", param=field)
    if field == "body" and kind in ("model_attributes_type", "model_type", "dict_type"):
        # Also what a non-JSON content-type yields: FastAPI then hands over raw bytes.
        return InvalidRequest("body: must be a JSON object (content-type: application/json)", param="body")
    message = first.get("msg", "invalid value")
    if kind == "value_error":  # our own validators already say what is wrong, often with a path
        message = str((first.get("ctx") or {}).get("error", message))
        if message.startswith(field):
            return InvalidRequest(message, param=field)
    return InvalidRequest(f"{field}: {message}", param=field)


def allowed_methods(request: Request) -> str:
    """Every method some route takes on this path. Starlette's own Allow names one route's, and
    FastAPI nests included routers, so each method is asked of the routes through `matches`."""
    routes = request.app.router.routes
    allowed = [m for m in HTTP_METHODS
               if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    return ", ".join(allowed)


def install(app: Any) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(request: Request, err: GatewayError) -> JSONResponse:
        return error_response(request, err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(request, NotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            allow = allowed_methods(request)
            err = InvalidRequest(f"method {request.method} not allowed on {request.url.path}; use {allow}")
            return JSONResponse(envelope(request.url.path, err.type, err.message), status_code=405,
                                headers={"allow": allow})
        err = InvalidRequest(str(exc.detail))
        return JSONResponse(envelope(request.url.path, err.type, err.message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the type and request id only: exception text can carry request data.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse(
            envelope(request.url.path, "api_error", "internal error; retry later"), status_code=500
        )
