"""The FastAPI application. `create_app(runtime)` wires routers; the runtime comes from
`threadgate.runtime` (the composition root) unless a test hands one in."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI

from threadgate import __version__
from threadgate.api import errors, openapi, sse
from threadgate.api.middleware import RequestContext
from threadgate.api.request_counting import CountInferenceRequests
from threadgate.api.responses import FastJSONResponse
from threadgate.runtime import Runtime, get_runtime

def create_app(runtime: Runtime | None = None) -> FastAPI:
    from threadgate.background import invocation_hold

    hold = invocation_hold.from_environment()  # only under Lambda Web Adapter

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if hold is not None:
            await hold.start()  # first: an extension must register before LWA asks for an event
        rt = app.state.runtime = runtime or get_runtime()
        from threadgate.background import jobs_runner, sweeper as sweeping

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
    from threadgate.api.routes import chat, console, jobs, keys, messages, runs, search, threads, tools

    for module in (keys, threads, messages, runs, chat, tools, search, jobs, console):
        app.include_router(module.router)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.outer = RequestContext(
        CountInferenceRequests(super(ThreadgateApp, app).__call__, app),
        max_body_bytes=runtime.settings.max_body_bytes if runtime else _max_body(),
    )
    if hold is not None:
        app.outer = hold.wrap(app.outer)
    return app


class ThreadgateApp(FastAPI):
    """FastAPI with RequestContext OUTSIDE Starlette's error middleware, so even a 500 carries a
    request id and no unexpected exception (with its traceback) reaches the server's log."""

    outer: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.outer(scope, receive, send)


def _max_body() -> int:
    from threadgate.config import get_settings

    return get_settings().max_body_bytes
