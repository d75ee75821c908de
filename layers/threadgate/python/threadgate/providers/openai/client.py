"""`OpenAIProvider`: the `ModelProvider` port over the OpenAI Chat Completions HTTP API (httpx).

It speaks Anthropic Messages to the gateway and Chat Completions to the upstream, translating
with `translate.py`. `request["model"]` must already be the upstream model id.

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
from threadgate.providers.openai.translate import (
    OpenAIStreamTranslator,
    anthropic_request_to_openai,
    openai_response_to_anthropic,
)
from threadgate.providers.openai.wire import CHAT_COMPLETIONS_PATH, SSE_DONE
from threadgate.providers.openai.wire import request_headers as openai_headers


class OpenAIProvider(HTTPProvider):
    """`OpenAIProvider(base_url, api_key, *, timeout_s, connect_timeout_s, attempts, client,
    backoff_initial_s, backoff_max_s, max_retry_after_s)` (see `HTTPProvider`); `base_url`
    includes the version, e.g. "https://api.openai.com/v1"."""

    name = "openai"
    endpoint_path = CHAT_COMPLETIONS_PATH
    status_error = UpstreamStatusError
    request_headers = staticmethod(openai_headers)

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        model = _model(request)
        body = anthropic_request_to_openai({**request, "stream": False}, model)
        answer = await read_json(await self._upstream.open(body))
        if not isinstance(answer, dict) or "error" in answer:
            raise UpstreamError("upstream returned an answer that is not a completion")
        return openai_response_to_anthropic(answer, model)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        model = _model(request)
        body = anthropic_request_to_openai({**request, "stream": True}, model)
        # After [DONE] the answer is complete: a failed drain costs nothing.
        upstream = UpstreamEvents(await self._upstream.open(body), complete_when_done=True)
        translator = OpenAIStreamTranslator(model)
        async with contextlib.aclosing(upstream.data()) as payloads:
            async for data in payloads:
                if data.strip() == SSE_DONE:
                    upstream.done = True  # the usage chunk came before [DONE]: close the message now
                    for event in translator.finish():
                        upstream.received += 1
                        yield event
                    continue
                chunk = decode_json_object(data)
                if chunk is None:
                    raise stream_broken("upstream sent a malformed stream chunk", upstream.received)
                if "error" in chunk:
                    raise error_for_stream_payload(chunk, upstream.received)
                try:
                    events = translator.feed(chunk)
                except UpstreamError as exc:  # a chunk we cannot express in Anthropic events
                    raise stream_broken(exc.message, upstream.received) from None
                for event in events:
                    upstream.received += 1
                    yield event
        if upstream.done:
            return
        # Without [DONE], accept the end only if the finish reason and the usage both arrived:
        # a message without its usage could not be billed.
        if not (translator.saw_finish_reason and translator.saw_usage):
            raise stream_broken("upstream stream ended before [DONE]", upstream.received)
        for event in translator.finish():
            yield event


def _model(request: dict[str, Any]) -> str:
    model = request.get("model") if isinstance(request, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: must be a non-empty string", param="model")
    return model
