"""`AnthropicProvider`: the `ModelProvider` port over the Anthropic Messages HTTP API (httpx).

Retry policy: a call is retried (exponential backoff with jitter, `retry-after` honoured when
small) only while no byte of the answer has been received — connection failures, timeouts before
the response headers, and 429/5xx/529 statuses. Once an answer has started nothing is retried:
the caller may already have forwarded (and must bill) part of it. Neither request bodies nor
the API key are ever logged or put into an error.
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

from threadgate.domain.errors import UpstreamError, UpstreamTimeout
from threadgate.providers import UpstreamStreamBroken
from threadgate.providers.anthropic.errors import (
    RETRYABLE_STATUSES,
    UpstreamStatusError,
    error_for_status,
    error_for_stream_event,
    error_for_transport,
    parse_retry_after,
)
from threadgate.providers.anthropic.wire import MESSAGES_PATH, request_headers

logger = logging.getLogger(__name__)

# An error body is only read to extract `error.message`; never buffer an unbounded page.
_MAX_ERROR_BODY_BYTES = 64 * 1024


class AnthropicProvider:
    """`base_url` as in ANTHROPIC_BASE_URL (without `/v1`). `timeout_s` bounds every wait for
    bytes (headers, then each stream chunk), not the whole answer; `attempts` counts the first
    call. One pooled `httpx.AsyncClient` serves all calls: pass `client` to share one (it is then
    not closed by `aclose()`)."""

    name = "anthropic"

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
        self._url = base_url.rstrip("/") + MESSAGES_PATH
        self._api_key = api_key
        self._headers = request_headers(api_key)
        # `read` bounds each wait for bytes: before the headers, and between stream chunks.
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._attempts = max(1, attempts)
        self._client = client
        self._owns_client = client is None
        # initial × 2^(n-1), capped, plus up to `initial` of jitter so retries spread out.
        self._backoff = wait_exponential(multiplier=backoff_initial_s, max=backoff_max_s) + wait_random(
            0, backoff_initial_s
        )
        self._max_retry_after_s = max_retry_after_s

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        body = {key: value for key, value in request.items() if key != "stream"}
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
            message = orjson.loads(raw)
        except ValueError:
            raise UpstreamError("upstream returned an unreadable answer") from None
        if not (
            isinstance(message, dict)
            and message.get("type") == "message"
            and isinstance(message.get("content"), list)
        ):
            raise UpstreamError("upstream returned an answer that is not a message")
        return message

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        response = await self._open({**request, "stream": True})
        received = 0
        stopped = False
        try:
            async for sse in EventSource(response).aiter_sse():
                if stopped:
                    continue  # drain to the end so the connection returns to the pool
                event = _decode_event(sse.data)
                if event is None:
                    raise _broken("upstream sent a malformed stream event", received)
                kind = event.get("type")
                if kind == "ping":
                    continue
                if kind == "error":
                    raise error_for_stream_event(event, received, (self._api_key,))
                received += 1
                yield event
                stopped = kind == "message_stop"
            if not stopped:
                raise _broken("upstream stream ended before message_stop", received)
        except SSEError:
            raise UpstreamError("upstream did not answer with an event stream") from None
        except httpx.TimeoutException:
            raise error_for_transport("timeout", received) from None
        except httpx.HTTPError:
            raise error_for_transport("connection", received) from None
        finally:
            await response.aclose()

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
        request = http.build_request(
            "POST", self._url, content=payload, headers=self._headers, timeout=self._timeout
        )
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
            if exc.status == 429 and exc.retry_after_s is not None:
                return exc.retry_after_s <= self._max_retry_after_s
            return exc.status in RETRYABLE_STATUSES
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


def _decode_event(data: str) -> dict[str, Any] | None:
    try:
        event = orjson.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None


def _broken(message: str, received: int) -> UpstreamError:
    if received:
        return UpstreamStreamBroken(message, events_received=received)
    return UpstreamError(message)


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
        "anthropic call failed before answering (%s); retry %d after %.2fs",
        cause,
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )
