"""The FastAPI application. `create_app(runtime)` wires routers; the runtime comes from
`threadgate.runtime` (the composition root) unless a test hands one in.

Route modules are imported when a request first needs them, not when the app is created: a
Lambda cold start then imports FastAPI and this skeleton only (bench/coldstart_bench.py), and
API Gateway sends each function a few route groups. ROUTE_MODULES says which paths each module
serves; a path it does not name loads every module, so a 404, a 405 and /openapi.json answer
exactly as with all routes present (tests/unit/test_lazy_routes.py holds the table true).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import TYPE_CHECKING, Any, Iterable

from fastapi import FastAPI

from threadgate import __version__
from threadgate.api import errors, openapi
from threadgate.api.hot_routes import HotRoutes
from threadgate.api.middleware import RequestContext
from threadgate.api.request_counting import CountInferenceRequests
from threadgate.api.responses import FastJSONResponse

if TYPE_CHECKING:
    from threadgate.runtime import Runtime

# threadgate.api.routes.<module> -> the path prefixes of every route it declares.
ROUTE_MODULES: dict[str, tuple[str, ...]] = {
    "keys": ("/v1/keys", "/v1/key", "/v1/account", "/v1/usage", "/v1/models"),
    "threads": ("/v1/threads",),
    "messages": ("/v1/messages", "/v1/threads/"),
    "runs": ("/v1/threads/",),
    "chat": ("/v1/chat/completions",),
    "responses": ("/v1/responses",),
    "tools": ("/v1/tools",),
    "search": ("/v1/search", "/v1/threads/"),
    "jobs": ("/v1/jobs",),
    "console": ("/console",),
}
OWN_PATHS = ("/health",)  # served by the app itself: no route module needed


def route_modules_for(path: str) -> list[str]:
    """The route modules a request for `path` may need (all of them for a path none names)."""
    if path in OWN_PATHS:
        return []
    return [name for name, prefixes in ROUTE_MODULES.items() if path.startswith(prefixes)] or list(ROUTE_MODULES)


def create_app(runtime: Runtime | None = None) -> FastAPI:
    from threadgate.background import invocation_hold

    hold = invocation_hold.from_environment()  # only under Lambda Web Adapter

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if hold is not None:
            await hold.start()  # first: an extension must register before LWA asks for an event
        from threadgate.api import sse
        from threadgate.background import jobs_runner, sweeper as sweeping
        from threadgate.runtime import get_runtime

        rt = app.state.runtime = runtime or get_runtime()

        sweeper = asyncio.create_task(sweeping.sweep_forever(rt)) if rt.settings.mode == "local" else None

        if rt.settings.mode != "aws":  # one process per data directory: what is running is dead
            from threadgate.background.runs_recovery import end_dead_runs

            await end_dead_runs(rt)
        await jobs_runner.start_jobs(app, rt)  # re-queue what a previous run left unfinished
        yield
        await jobs_runner.stop_jobs(app)
        if sweeper is not None:
            sweeper.cancel()
        await sse.wait_background()
        if hold is not None:
            await hold.stop()
        if runtime is None:
            await rt.aclose()

    app = ThreadgateApp(
        title="Threadgate",
        version=__version__,
        lifespan=lifespan,
        # Swagger UI would load its assets from a public CDN: off. /openapi.json is the contract.
        docs_url=None,
        default_response_class=FastJSONResponse,
        redoc_url=None,
        # Starlette would answer a trailing slash with a redirect built from the Host header.
        redirect_slashes=False,
    )
    if runtime is not None:
        app.state.runtime = runtime  # also usable without running the lifespan (Mangum "off")
    errors.install(app)
    openapi.install(app)

    @app.get("/health", include_in_schema=False, response_model=None)  # no response model: no pydantic analysis at import
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.hot = HotRoutes(app, super(ThreadgateApp, app).__call__)
    app.outer = RequestContext(
        CountInferenceRequests(app.hot, app),
        max_body_bytes=runtime.settings.max_body_bytes if runtime else None,
    )
    if hold is not None:
        app.outer = hold.wrap(app.outer)
    return app


class ThreadgateApp(FastAPI):
    """FastAPI with RequestContext OUTSIDE Starlette's error middleware, so even a 500 carries a
    request id and no unexpected exception (with its traceback) reaches the server's log; and
    with its route modules included on first need (ROUTE_MODULES)."""

    outer: Any = None
    hot: Any = None  # api/hot_routes.py: the inference routes past Starlette's stack

    def __init__(self, **kwargs: Any) -> None:
        self._included: set[str] = set()
        super().__init__(**kwargs)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and len(self._included) < len(ROUTE_MODULES):
            self.include_route_modules(route_modules_for(scope["path"]))
        await self.outer(scope, receive, send)

    def include_route_modules(self, names: Iterable[str] = tuple(ROUTE_MODULES)) -> None:
        """Import and include these route modules (all by default), each once, in table order."""
        for name in ROUTE_MODULES:
            if name in names and name not in self._included:
                self.include_router(importlib.import_module(f"threadgate.api.routes.{name}").router)
                self._included.add(name)

    @property
    def routes(self) -> list[Any]:
        """Every route (all modules included first): what the OpenAPI document and anyone
        listing the app's routes see."""
        self.include_route_modules()
        return super().routes

