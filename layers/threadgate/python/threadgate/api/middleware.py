"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and would break streaming)."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from threadgate.api.errors import envelope

log = logging.getLogger("threadgate.api")


class RequestContext:
    """Gives every response `request-id` / `x-request-id` and refuses oversized bodies (413)."""

    def __init__(self, app: Any, max_body_bytes: int | None = None):
        self.app = app
        # None: the configured limit, read on the first request (settings are not imported
        # before that: Lambda cold start).
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.max_body_bytes is None:
            from threadgate.config import get_settings

            self.max_body_bytes = get_settings().max_body_bytes
        request_id = "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id
        id_headers = [(b"request-id", request_id.encode()), (b"x-request-id", request_id.encode())]
        replaced = False

        async def send_with_id(message: dict) -> None:
            nonlocal replaced
            if replaced:
                return
            if too_large and message["type"] == "http.response.start":
                # The app saw a truncated body (whatever it answered): the answer is 413.
                replaced = True
                return await self._too_large(scope, send_raw)
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + id_headers
            await send(message)

        async def send_raw(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + id_headers
            await send(message)

        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        received = 0
        too_large = False
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._too_large(scope, send_raw)

        async def counting_receive() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send_with_id)
        except _BodyTooLarge:
            if not replaced:
                await self._too_large(scope, send_raw)
        except Exception as exc:
            # Starlette already answered 500 in the envelope; keep the traceback out of logs.
            log.error("unhandled %s (request %s)", type(exc).__name__, request_id)

    async def _too_large(self, scope: dict, send: Any) -> None:
        body = json.dumps(
            envelope(scope["path"], "request_too_large", f"request body over {self.max_body_bytes} bytes")
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
