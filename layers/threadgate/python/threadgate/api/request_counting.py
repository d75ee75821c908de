"""Counts inference requests per account and day, by how they were answered (API.md §4.2).

Pure ASGI around the app: it sees the final status of every answer (402s included, which leave no
usage event because no model was called) and the principal the auth dependency resolved. The
count is written after the answer is complete, so it never delays a response on one machine;
failing to count is logged, never answered.
"""

from __future__ import annotations

import logging
import re
from typing import Any

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

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            principal = scope.get("state", {}).get("principal")
            if status and principal is not None:
                await self._count(principal.account_id, status)

    async def _count(self, account_id: str, status: int) -> None:
        runtime = self.owner.state.runtime
        counter = runtime.stores.request_counts
        if counter is None:
            return
        from threadgate.domain.off_loop import off_loop  # not at import: the app's cold start
        from threadgate.domain.usage import day_of

        day = day_of(runtime.clock.now_ms())
        try:
            await off_loop(
                counter.add, account_id, day, error=status >= 400 and status != 402, cap_refusal=status == 402
            )
        except Exception as exc:
            log.warning("request not counted: %s", type(exc).__name__)
