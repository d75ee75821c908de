"""Keeps a Lambda invocation of the `stream` function open until its request is fully answered.

Lambda Web Adapter is done with an invocation when the response stream ends, and when the client
has left mid-stream that is at once: the response channel closes, LWA drops the app's stream and
(having asked for the next event already) is done (tests/infra/test_stream_function.py). Lambda then freezes the environment with the turn still
running: its answer unsaved and its reservation open until the sweeper bills the estimate.

An invocation ends only once the runtime AND every extension registered for INVOKE have asked for
their next event (Lambda execution environment lifecycle). So the app registers itself as an
internal extension (Extensions API, during init, before uvicorn opens its port and LWA polls)
and asks for its next event only once the request of the current one has returned from the ASGI
app. A turn's request returns only when the turn is persisted and settled, client or no client
(`TurnStreamingResponse`): its billing no longer depends on the client staying.

Requests are matched to events by the request id LWA forwards (`x-amzn-lambda-context`). The
hold never outlasts the invocation's deadline (the function's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from threadgate import jsoncodec

log = logging.getLogger("threadgate")

EXTENSION_NAME = "threadgate-invocation-hold"  # an internal extension's name is free (no file)
MAX_HOLD_S = 900.0  # Lambda's longest timeout: the bound when an event has no usable deadline
REGISTER_TIMEOUT_S = 5.0  # init must not hang on it (the next-event poll itself waits unbounded)
MAX_TRACKED = 64  # answered requests whose event has not come yet (one at a time on Lambda)


def from_environment() -> InvocationHold | None:
    """A hold when this process serves Lambda through the Web Adapter, else None (local, Mangum)."""
    api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    return InvocationHold(api) if api and os.environ.get("AWS_LWA_INVOKE_MODE") else None


class InvocationHold:
    def __init__(self, runtime_api: str) -> None:
        import httpx  # here, not at import: create_app (the Mangum function's cold start) imports this module

        self._http_error = httpx.HTTPError
        self._client = httpx.AsyncClient(base_url=f"http://{runtime_api}/2020-01-01/extension", timeout=None)
        self._answered: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task | None = None

    def wrap(self, app: Any) -> Any:
        """The ASGI app, noting each Lambda request id once its call has returned."""

        async def noting(scope: dict, receive: Any, send: Any) -> None:
            request_id = _request_id(scope) if scope["type"] == "http" else None
            try:
                await app(scope, receive, send)
            finally:
                if request_id:
                    self._event(request_id).set()

        return noting

    async def start(self) -> None:
        """Register (this must happen during init) and start the event loop in the background."""
        try:
            answer = await self._client.post(
                "/register", headers={"Lambda-Extension-Name": EXTENSION_NAME}, json={"events": ["INVOKE"]},
                timeout=REGISTER_TIMEOUT_S,
            )
            answer.raise_for_status()
        except self._http_error as exc:
            log.error("invocation hold not registered (%s): a client that leaves mid-turn may leave "
                      "its turn to the sweeper", type(exc).__name__)
            return
        self._task = asyncio.create_task(self._events(answer.headers["Lambda-Extension-Identifier"]))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _events(self, extension_id: str) -> None:
        headers = {"Lambda-Extension-Identifier": extension_id}
        while True:
            try:
                event = (await self._client.get("/event/next", headers=headers)).json()
            except (self._http_error, ValueError) as exc:  # the Runtime API itself is in trouble
                log.error("invocation hold: next event failed (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if event.get("eventType") == "INVOKE":
                await self._until_answered(str(event.get("requestId")), event.get("deadlineMs"))

    async def _until_answered(self, request_id: str, deadline_ms: Any) -> None:
        left_s = deadline_ms / 1000 - time.time() if isinstance(deadline_ms, int) and deadline_ms else 0
        try:
            await asyncio.wait_for(self._event(request_id).wait(), timeout=left_s if left_s > 0 else MAX_HOLD_S)
        except asyncio.TimeoutError:
            log.error("invocation hold: request %s still running at its deadline", request_id)
        self._answered.pop(request_id, None)

    def _event(self, request_id: str) -> asyncio.Event:
        event = self._answered.get(request_id)
        if event is None:
            while len(self._answered) >= MAX_TRACKED:
                self._answered.pop(next(iter(self._answered)))
            event = self._answered[request_id] = asyncio.Event()
        return event


def _request_id(scope: dict) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"x-amzn-lambda-context":
            try:
                return str(jsoncodec.loads(value)["request_id"])
            except (ValueError, KeyError, TypeError):
                return None
    return None
