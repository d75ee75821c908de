"""Counts inference requests per account and day, by how they were answered (API.md §4.2).

Pure ASGI around the app: it sees the final status of every answer (402s included, which leave no
usage event because no model was called) and the principal the auth dependency resolved. The
request's first reservation counts it in the same write where the store can (SQLite; see
domain/request_tally.py for what a kill -9 does to the count); what is left (an error or a 402,
or a request nothing counted) is written after the answer is complete, so it never delays a
response on one machine; failing to count is logged, never answered.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from threadgate.domain import request_tally

log = logging.getLogger("threadgate.api")

_INFERENCE = re.compile(r"^/v1/(messages|chat/completions|responses|jobs|threads/[^/]+/messages)$")


class CountInferenceRequests:
    def __init__(self, app: Any, owner: Any):
        self.app = app
        self.owner = owner  # the FastAPI app: its state.runtime holds the stores

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _INFERENCE.match(scope["path"]):
            return await self.app(scope, receive, send)
        status = 0

        async def send_and_see(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        counter = self.owner.state.runtime.stores.request_counts
        request_id = scope.get("state", {}).get("request_id") if counter is not None else None
        # The request's first reservation may count it in its own write (domain/request_tally.py).
        tally = request_tally.open_tally(request_id) if request_id is not None else None
        try:
            await self.app(scope, receive, send_and_see)
        finally:
            if request_id is not None:
                request_tally.close_tally(request_id)
            principal = scope.get("state", {}).get("principal")
            if status and principal is not None and counter is not None:
                await self._count(counter, principal.account_id, status, tally)

    async def _count(self, counter: Any, account_id: str, status: int, tally: Any) -> None:
        error, refused = status >= 400 and status != 402, status == 402
        counted = tally is not None and tally.day is not None
        if counted and not (error or refused):
            return  # the common answer: counted with its reservation, nothing to add
        from threadgate.domain.off_loop import off_loop  # not at import: the app's cold start
        from threadgate.domain.usage import day_of

        day = tally.day if counted else day_of(self.owner.state.runtime.clock.now_ms())
        try:
            await off_loop(counter.add, account_id, day, error=error, cap_refusal=refused, request=not counted)
        except Exception as exc:
            log.warning("request not counted: %s", type(exc).__name__)
