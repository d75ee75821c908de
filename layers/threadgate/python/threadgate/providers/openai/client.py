"""`OpenAIProvider`: the `ModelProvider` port over the OpenAI Chat Completions HTTP API (aiohttp).

Thread turns speak Anthropic Messages to it (the canonical shape), translated field by field by
`providers/field_map.py`; same-family passthrough forwards Chat Completions bodies as they are.
`request["model"]` must already be the upstream model id.

Retry policy (shared with Anthropic, see `threadgate.providers.http`): retried only until a 2xx
status arrives — connection failures, timeouts before the headers, 429 (except
`insufficient_quota`) and 5xx. Once an answer has started nothing is retried. A stream that
breaks after its first event raises `UpstreamStreamBroken`. Neither request bodies nor the API
key are ever logged or put into an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from threadgate.domain.errors import InvalidRequest, UpstreamError
from threadgate.providers.http import HTTPProvider, UpstreamEvents, decode_json_object, read_json
from threadgate.providers.openai.errors import (
    UpstreamStatusError,
    error_for_stream_payload,
    stream_broken,
)
from threadgate.providers.field_map import messages_to_chat
from threadgate.providers.openai.responses import RESPONSE_OBJECT, RESPONSES_PATH, TERMINAL_EVENTS
from threadgate.providers.openai.streams import OpenAIStreamTranslator
from threadgate.providers.openai.translate import openai_response_to_anthropic
from threadgate.providers.openai.wire import CHAT_COMPLETIONS_PATH, SSE_DONE
from threadgate.providers.openai.wire import request_headers as openai_headers


class OpenAIProvider(HTTPProvider):
    """`OpenAIProvider(base_url, api_key, *, timeout_s, connect_timeout_s, attempts, client,
    backoff_initial_s, backoff_max_s, max_retry_after_s)` (see `HTTPProvider`); `base_url`
    includes the version, e.g. "https://api.openai.com/v1".

    `forward`/`forward_stream` speak Chat Completions as they are (same-family passthrough),
    `respond`/`respond_stream` the Responses API as it is; `create`/`stream`, the `ModelProvider`
    port, translate the canonical Anthropic shape."""

    name = "openai"
    endpoint_path = CHAT_COMPLETIONS_PATH
    status_error = UpstreamStatusError
    request_headers = staticmethod(openai_headers)

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._responses = self._upstream.at(base_url.rstrip("/") + RESPONSES_PATH)

    async def aclose(self) -> None:
        await super().aclose()
        await self._responses.aclose()

    async def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Responses API request as it is; returns the `response` as it came."""
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        answer = await read_json(await self._responses.open(body))
        if not isinstance(answer, dict) or answer.get("object") != RESPONSE_OBJECT:
            raise UpstreamError("upstream returned an answer that is not a response")
        return answer

    async def respond_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A Responses API request as it is, streamed: yields its events as they came, up to the
        terminal one (response.completed / incomplete / failed), which carries the usage."""
        upstream = UpstreamEvents(await self._responses.open({**body, "stream": True}), complete_when_done=True)
        async with contextlib.aclosing(upstream.data()) as payloads:
            async for data in payloads:
                event = decode_json_object(data)
                if event is None:
                    raise stream_broken("upstream sent a malformed stream event", upstream.received)
                if event.get("type") == "error":
                    raise error_for_stream_payload({"error": {"type": event.get("code")}}, upstream.received)
                upstream.received += 1
                upstream.done = event.get("type") in TERMINAL_EVENTS
                yield event
        if not upstream.done:  # without its terminal event the answer has no usage to bill
            raise stream_broken("upstream stream ended before response.completed", upstream.received)

    async def forward(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Chat Completions request as it is; returns the `chat.completion` as it came."""
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        answer = await read_json(await self._upstream.open(body))
        if not isinstance(answer, dict) or "error" in answer or not isinstance(answer.get("choices"), list):
            raise UpstreamError("upstream returned an answer that is not a completion")
        return answer

    async def forward_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A Chat Completions request as it is, streamed: yields its chunks as they came, up to
        [DONE]. The usage chunk is always asked for (the gateway bills from it)."""
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        body = {**body, "stream": True, "stream_options": {**options, "include_usage": True}}
        # After [DONE] the answer is complete: a failed drain costs nothing.
        upstream = UpstreamEvents(await self._upstream.open(body), complete_when_done=True)
        finished = usage = False
        async with contextlib.aclosing(upstream.data()) as payloads:
            async for data in payloads:
                if data.strip() == SSE_DONE:
                    upstream.done = True
                    continue
                chunk = decode_json_object(data)
                if chunk is None:
                    raise stream_broken("upstream sent a malformed stream chunk", upstream.received)
                if "error" in chunk:
                    raise error_for_stream_payload(chunk, upstream.received)
                usage = usage or isinstance(chunk.get("usage"), dict)
                finished = finished or any(
                    isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ()
                )
                upstream.received += 1
                yield chunk
        # Without [DONE], accept the end only if the finish reason and the usage both arrived:
        # an answer without its usage could not be billed.
        if not upstream.done and not (finished and usage):
            raise stream_broken("upstream stream ended before [DONE]", upstream.received)

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        _model(request)
        return await self.create_from_chat(messages_to_chat(request))

    def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        _model(request)
        return self.stream_from_chat(messages_to_chat(request))

    async def create_from_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Chat Completions body, answered as an Anthropic `message`."""
        return openai_response_to_anthropic(await self.forward(body), body["model"])

    async def stream_from_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A Chat Completions body, streamed as Anthropic events."""
        translator = OpenAIStreamTranslator(body["model"])
        sent = 0
        async with contextlib.aclosing(self.forward_stream(body)) as chunks:
            try:
                async for chunk in chunks:
                    for event in translator.feed(chunk):
                        sent += 1
                        yield event
            except UpstreamError as exc:  # broken, or a chunk we cannot express in Anthropic events
                if not sent:
                    raise
                raise stream_broken(exc.message, sent) from None  # counted in events, not chunks
        for event in translator.finish():  # the usage chunk came before [DONE]: close the message now
            yield event


def _model(request: dict[str, Any]) -> str:
    model = request.get("model") if isinstance(request, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: must be a non-empty string", param="model")
    return model
