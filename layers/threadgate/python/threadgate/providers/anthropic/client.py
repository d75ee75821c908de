"""`AnthropicProvider`: the `ModelProvider` port over the Anthropic Messages HTTP API (aiohttp).

Retry policy (see `threadgate.providers.http`): a call is retried only while no byte of the
answer has been received — connection failures, timeouts before the response headers, and
429/5xx/529 statuses. Once an answer has started nothing is retried: the caller may already have
forwarded (and must bill) part of it. Neither request bodies nor the API key are ever logged or
put into an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from threadgate.domain.errors import UpstreamError
from threadgate.providers.anthropic.errors import UpstreamStatusError, error_for_stream_event
from threadgate.providers.anthropic.wire import MESSAGES_PATH
from threadgate.providers.anthropic.wire import request_headers as anthropic_headers
from threadgate.providers.errors import stream_broken
from threadgate.providers.http import HTTPProvider, UpstreamEvents, decode_json_object, read_json


class AnthropicProvider(HTTPProvider):
    """`AnthropicProvider(base_url, api_key, *, timeout_s, connect_timeout_s, attempts, client,
    backoff_initial_s, backoff_max_s, max_retry_after_s)` (see `HTTPProvider`); `base_url` as in
    ANTHROPIC_BASE_URL (without `/v1`)."""

    name = "anthropic"
    endpoint_path = MESSAGES_PATH
    status_error = UpstreamStatusError
    request_headers = staticmethod(anthropic_headers)

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        body = {key: value for key, value in request.items() if key != "stream"}
        message = await read_json(await self._upstream.open(body))
        if not (
            isinstance(message, dict)
            and message.get("type") == "message"
            and isinstance(message.get("content"), list)
        ):
            raise UpstreamError("upstream returned an answer that is not a message")
        return message

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        upstream = UpstreamEvents(await self._upstream.open({**request, "stream": True}), complete_when_done=False)
        async with contextlib.aclosing(upstream.data()) as payloads:
            async for data in payloads:
                event = decode_json_object(data)
                if event is None or not isinstance(event.get("type"), str):
                    raise stream_broken("upstream sent a malformed stream event", upstream.received)
                kind = event["type"]
                if kind == "ping":
                    continue
                if kind == "error":
                    raise error_for_stream_event(event, upstream.received, self._upstream.secrets)
                upstream.received += 1
                yield event
                upstream.done = kind == "message_stop"  # the rest is drained unread
        if not upstream.done:
            raise stream_broken("upstream stream ended before message_stop", upstream.received)
