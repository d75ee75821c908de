"""`OpenAIProvider`: the `ModelProvider` port over the OpenAI Chat Completions HTTP API (httpx).

It speaks Anthropic Messages to the gateway and Chat Completions to the upstream, translating
with `translate.py`. `request["model"]` must already be the upstream model id.

Retry policy (as for Anthropic): retried with exponential backoff and jitter (`retry-after`
honoured when small) only until a 2xx status arrives — connection failures, timeouts before the
headers, 429 (except `insufficient_quota`) and 5xx. Once an answer has started nothing is
retried. A stream that breaks after its first event raises `UpstreamStreamBroken`. Neither
request bodies nor the API key are ever logged or put into an error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from threadgate.domain.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from threadgate.providers.openai.errors import (
    UpstreamStatusError,
    error_for_status,
    error_for_stream_payload,
    error_for_transport,
    parse_retry_after,
    stream_broken,
)
from threadgate.providers.openai.translate import (
    OpenAIStreamTranslator,
    anthropic_request_to_openai,
    openai_response_to_anthropic,
)
from threadgate.providers.openai.wire import CHAT_COMPLETIONS_PATH, SSE_DONE

logger = logging.getLogger(__name__)

# An error body is only read to extract `error.message`; never buffer an unbounded page.
_MAX_ERROR_BODY_BYTES = 64 * 1024


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        attempts: int = 3,
        client: httpx.AsyncClient | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 10.0,
    ) -> None:
        """`base_url` includes the version, e.g. "https://api.openai.com/v1"."""
        self._url = base_url.rstrip("/") + CHAT_COMPLETIONS_PATH
        self._api_key = api_key
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        # `read` bounds each wait for bytes: before the headers, and between stream chunks.
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._attempts = max(1, attempts)
        self._client = client
        self._owns_client = client is None
        # Exponential backoff plus jitter, spelled with waits every supported tenacity has.
        self._backoff = wait_exponential(multiplier=backoff_initial_s, max=backoff_max_s) + wait_random(0, backoff_initial_s)
        self._max_retry_after_s = max_retry_after_s

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        model = _model(request)
        body = anthropic_request_to_openai({**request, "stream": False}, model)
        response = await self._open(body)
        try:
            raw = await response.aread()
        except httpx.TimeoutException:
            raise UpstreamTimeout("upstream timed out") from None
        except httpx.HTTPError:
            raise UpstreamError("upstream connection broke while answering") from None
        finally:
            await response.aclose()
        try:
            answer = orjson.loads(raw)
        except ValueError:
            raise UpstreamError("upstream returned an unreadable answer") from None
        if not isinstance(answer, dict) or "error" in answer:
            raise UpstreamError("upstream returned an answer that is not a completion")
        return openai_response_to_anthropic(answer, model)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        model = _model(request)
        body = anthropic_request_to_openai({**request, "stream": True}, model)
        response = await self._open(body)
        translator = OpenAIStreamTranslator(model)
        received = 0
        done = False
        try:
            async for sse in EventSource(response).aiter_sse():
                if done:
                    continue  # drain to the end so the connection returns to the pool
                if sse.data.strip() == SSE_DONE:
                    done = True  # the usage chunk came before [DONE]: close the message now
                    for event in translator.finish():
                        received += 1
                        yield event
                    continue
                chunk = _decode_chunk(sse.data)
                if chunk is None:
                    raise stream_broken("upstream sent a malformed stream chunk", received)
                if "error" in chunk:
                    raise error_for_stream_payload(chunk, received)
                try:
                    events = translator.feed(chunk)
                except UpstreamError as exc:  # a chunk we cannot express in Anthropic events
                    raise stream_broken(exc.message, received) from None
                for event in events:
                    received += 1
                    yield event
        except SSEError:
            raise UpstreamError("upstream did not answer with an event stream") from None
        except httpx.TimeoutException:
            if not done:
                raise error_for_transport("timeout", received) from None
        except httpx.HTTPError:
            if not done:  # after [DONE] the answer is complete; a failed drain costs nothing
                raise error_for_transport("connection", received) from None
        finally:
            await response.aclose()
        if done:
            return
        # Without [DONE], accept the end only if the finish reason and the usage both arrived:
        # a message without its usage could not be billed.
        if not (translator.saw_finish_reason and translator.saw_usage):
            raise stream_broken("upstream stream ended before [DONE]", received)
        for event in translator.finish():
            yield event

    async def aclose(self) -> None:
        """Close the pooled connections (only those of a client this provider created)."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        # Created lazily (no I/O at construction) and reused for connection pooling.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _open(self, body: dict[str, Any]) -> httpx.Response:
        """Send with retries until a 2xx status arrives; returns it with the body unread."""
        payload = orjson.dumps(body)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(self._is_retryable),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(payload)
        except UpstreamStatusError as exc:
            raise error_for_status(exc.status, exc.body, exc.retry_after_s, (self._api_key,)) from None
        except httpx.TimeoutException:
            raise error_for_transport("timeout") from None
        except httpx.HTTPError:
            raise error_for_transport("connection") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _send_once(self, payload: bytes) -> httpx.Response:
        http = self._http()
        request = http.build_request("POST", self._url, content=payload, headers=self._headers, timeout=self._timeout)
        response = await http.send(request, stream=True)
        if 200 <= response.status_code < 300:
            return response
        try:
            body = await _read_capped(response)
        finally:
            await response.aclose()
        raise UpstreamStatusError(response.status_code, body, parse_retry_after(response.headers))

    def _is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, UpstreamStatusError):
            if exc.status == 429 and exc.retry_after_s is not None and exc.retry_after_s > self._max_retry_after_s:
                return False  # the upstream asks for a longer pause than a caller should wait
            return exc.retryable
        if isinstance(exc, httpx.PoolTimeout):
            return False  # our own pool is saturated; another attempt would queue again
        # Everything here happened before the response headers (see `_send_once`).
        return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))

    def _wait(self, retry_state: RetryCallState) -> float:
        delay = self._backoff(retry_state)
        outcome = retry_state.outcome
        hint = getattr(outcome.exception(), "retry_after_s", None) if outcome else None
        if hint is not None:
            delay = max(delay, min(hint, self._max_retry_after_s))
        return delay


def _model(request: dict[str, Any]) -> str:
    model = request.get("model") if isinstance(request, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: must be a non-empty string", param="model")
    return model


def _decode_chunk(data: str) -> dict[str, Any] | None:
    try:
        chunk = orjson.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ERROR_BODY_BYTES:
            break
    return b"".join(chunks)[:_MAX_ERROR_BODY_BYTES]


def _log_retry(retry_state: RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    cause = f"status {exc.status}" if isinstance(exc, UpstreamStatusError) else type(exc).__name__
    logger.warning(
        "openai call failed before answering (%s); retry %d after %.2fs",
        cause,
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )
