"""The inference routes served straight from the ASGI entry, past Starlette's middleware stack,
its router and FastAPI's dependency solving.

Why: those layers (ServerErrorMiddleware, ExceptionMiddleware, AsyncExitStack, the body-limit and
telemetry wrappers, route matching, dependency solving) were ~20 % of the gateway's CPU on
/v1/chat/completions (bench/results/profile.json, bench/hot_path_profile.py); the numbers before
and after are in the closing note of issue #13 (fast path). What they do for these routes is
done here by the same functions: `get_runtime` / `get_principal` (the routes' `Depends`), the
route's own endpoint, and the app's exception handlers with Starlette's rules (a handled error →
its envelope; any other → the 500 envelope, then re-raised so RequestContext logs it). Request
ids, the 413 body limit, request counting and uvicorn's access log sit outside and see both paths
alike. FastAPI keeps the routes registered: OpenAPI, other methods (405), everything not in HOT.
tests/integration/test_hot_routes.py sends the same requests through both paths and compares the answers.
"""

from __future__ import annotations

import importlib
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request

# POST path -> the route module declaring it. Each endpoint takes exactly (request, p, rt):
# `handler_of` checks that against the registered route, so a changed signature fails loudly.
HOT: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}

Handler = Callable[[Request], Awaitable[Any]]


def handler_of(path: str) -> Handler:
    """request -> response: the FastAPI endpoint registered for POST `path` with its two
    dependencies resolved by the same functions, once checked to need nothing else (no path,
    query, header or body fields)."""
    from threadgate.api.deps import get_principal, get_runtime  # not at import: Lambda cold start

    router = importlib.import_module(f"threadgate.api.routes.{HOT[path]}").router
    route = next(r for r in router.routes if r.path == path and "POST" in r.methods)
    d = route.dependant
    needs = {(dep.name, dep.call) for dep in d.dependencies}
    fields = d.path_params + d.query_params + d.header_params + d.cookie_params + d.body_params
    if needs != {("p", get_principal), ("rt", get_runtime)} or fields or d.request_param_name != "request" \
            or route.dependencies:
        raise RuntimeError(f"POST {path} no longer fits api/hot_routes.py: serve it through FastAPI")
    endpoint = route.endpoint

    async def handle(request: Request) -> Any:
        rt = await get_runtime(request)
        return await endpoint(request, p=await get_principal(request, rt), rt=rt)

    return handle


class HotRoutes:
    """ASGI: POST to a HOT path goes to its endpoint directly; everything else to `fastapi`."""

    def __init__(self, app: Any, fastapi: Any):
        self.app = app  # the ThreadgateApp: state.runtime, exception_handlers
        self.fastapi = fastapi
        self.paths: dict[str, str] = HOT  # {} sends everything through FastAPI (tests compare both)
        self.handlers: dict[str, Handler] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path")
        if path not in self.paths or scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return await self.fastapi(scope, receive, send)
        handle = self.handlers.get(path) or self.handlers.setdefault(path, handler_of(path))
        scope["app"] = self.app  # as Starlette sets it: request.app
        request = Request(scope, receive, send)
        unexpected = self.app.exception_handlers[Exception]  # errors.install: the 500 envelope + log line
        try:
            response = await handle(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:  # as ServerErrorMiddleware: answer 500, then raise again
                await (await unexpected(request, exc))(scope, receive, send)
                raise
            response = await handler(request, exc)
        try:
            await response(scope, receive, send)
        except Exception as exc:  # our responses send their start first: this is mid-answer
            if self._handler_for(exc) is not None:  # Starlette's words for it
                exc = RuntimeError("Caught handled exception, but response already started.")
            await unexpected(request, exc)  # its log line; nothing more can be sent
            raise exc

    def _handler_for(self, exc: Exception) -> Any:
        """The app's handler for `exc` as Starlette's ExceptionMiddleware finds it (Exception's
        own is ServerErrorMiddleware's, applied above)."""
        handlers = self.app.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        return next((handlers[c] for c in type(exc).__mro__ if c in handlers and c is not Exception), None)
