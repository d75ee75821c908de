"""The HTTP plumbing every upstream provider shares (aiohttp + tenacity).

aiohttp, not httpx, on this path: under load httpx + httpcore + anyio + h11 cost the gateway
about half of its CPU per call; aiohttp's client (C parser, asyncio transports, no anyio layer)
halves the gateway's CPU per request (bench/hot_path_profile.py; notes in docs/benchmarks.md).

- `HTTPProvider` — the base of `AnthropicProvider` and `OpenAIProvider`: their shared
  constructor, connection pooling and `aclose()`;
- `UpstreamHTTP` posts JSON to one endpoint over a pooled, lazily created `aiohttp.ClientSession`,
  retrying under a `RetryPolicy` (exponential backoff with jitter, `retry-after` honoured when
  small) only until a 2xx status arrives — connection failures, timeouts before the response
  headers, and the statuses the provider's `UpstreamStatusError` calls retryable. Once an answer
  has started nothing is retried: the caller may already have forwarded (and must bill) part of it;
- `read_json` reads a whole answer, `UpstreamEvents` the SSE `data` of a streamed one, naming
  transport failures as domain errors.

Neither request bodies nor the API key are ever logged or put into an error.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from threadgate import jsoncodec
from threadgate.domain.errors import UpstreamError, UpstreamTimeout
from threadgate.providers.errors import UpstreamStatusError, error_for_transport, parse_retry_after

logger = logging.getLogger(__name__)

# An error body is only read to extract `error.message`; never buffer an unbounded page.
MAX_ERROR_BODY_BYTES = 64 * 1024
POOL_SIZE = 100  # connections per provider (httpx's default before): concurrent calls beyond wait


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures before the first byte are worth another attempt, and how long to wait.

    `attempts` counts the first call. The wait is initial × 2^(n-1), capped, plus up to
    `initial` of jitter so retries spread out; an upstream `retry-after` lengthens it up to
    `max_retry_after_s`, and a 429 asking for longer than that is not retried at all."""

    attempts: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 10.0

    def retrying(self, before_sleep: Callable[[RetryCallState], None]) -> AsyncRetrying:
        backoff = wait_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s) + wait_random(
            0, self.backoff_initial_s
        )

        def wait(retry_state: RetryCallState) -> float:
            delay = backoff(retry_state)
            outcome = retry_state.outcome
            hint = getattr(outcome.exception(), "retry_after_s", None) if outcome else None
            if hint is not None:
                delay = max(delay, min(hint, self.max_retry_after_s))
            return delay

        return AsyncRetrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=wait,
            retry=retry_if_exception(self.is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, UpstreamStatusError):
            if exc.status == 429 and exc.retry_after_s is not None and exc.retry_after_s > self.max_retry_after_s:
                return False  # the upstream asks for a longer pause than a caller should wait
            return exc.retryable
        # Everything here happened before the response headers (see `UpstreamHTTP._send_once`):
        # timeouts (connect, or waiting for the headers), refused or dropped connections, and
        # answers that were not HTTP.
        return isinstance(exc, (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientResponseError))


class UpstreamHTTP:
    """POSTs JSON to one upstream endpoint. `timeout` bounds every wait for bytes (its `read`:
    before the headers, then between stream chunks), not the whole answer. Pass `client` to
    share one `aiohttp.ClientSession` (it is then not closed by `aclose()`). `name` only labels the
    retry log lines; `secret` is redacted from anything the upstream sends back."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        name: str,
        secret: str,
        status_error: type[UpstreamStatusError],
        timeout: aiohttp.ClientTimeout,
        retry: RetryPolicy,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = url
        self._headers = dict(headers)
        self._name = name
        self._secrets = (secret,)
        self._status_error = status_error
        self._timeout = timeout
        self._retry = retry
        self._client = client
        self._owns_client = client is None
        self._proxy = env_proxy(url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must be redacted from anything the upstream sends back."""
        return self._secrets

    def client(self) -> aiohttp.ClientSession:
        # Created lazily (a session binds to the running loop) and reused for connection pooling:
        # at most `POOL_SIZE` connections (kept alive between calls), no cookies kept between
        # callers' calls. Not `trust_env`: it reads netrc and the proxy variables in a worker
        # thread on every call (two thread hops); `env_proxy` reads the proxy once.
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections (only those of a client this helper created)."""
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None

    def at(self, url: str) -> UpstreamHTTP:
        """The same upstream (headers, key, timeouts, retries) at another endpoint `url`. It
        shares the client handed in, if any; otherwise it pools its own connections."""
        return UpstreamHTTP(
            url, self._headers, name=self._name, secret=self._secrets[0], status_error=self._status_error,
            timeout=self._timeout, retry=self._retry, client=None if self._owns_client else self._client,
        )

    async def open(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST `body` with retries until a 2xx status arrives; returns it with the body unread.
        The caller must close it (`read_json` and `UpstreamEvents` do)."""
        payload = jsoncodec.dumps(body)
        try:
            async for attempt in self._retry.retrying(before_sleep=self._log_retry):
                with attempt:
                    return await self._send_once(payload)
        except UpstreamStatusError as exc:
            raise exc.domain_error(self._secrets) from None
        except TimeoutError:
            raise error_for_transport("timeout") from None
        except aiohttp.ClientError:
            raise error_for_transport("connection") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _send_once(self, payload: bytes) -> aiohttp.ClientResponse:
        response = await self.client().post(
            self._url, data=payload, headers=self._headers, allow_redirects=False, proxy=self._proxy)
        if 200 <= response.status < 300:
            return response
        try:
            body = await read_capped(response)
        finally:
            response.release()
        raise self._status_error(response.status, body, parse_retry_after(response.headers))

    def _log_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        cause = f"status {exc.status}" if isinstance(exc, UpstreamStatusError) else type(exc).__name__
        logger.warning(
            "%s call failed before answering (%s); retry %d after %.2fs",
            self._name,
            cause,
            retry_state.attempt_number,
            retry_state.upcoming_sleep,
        )


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY / HTTP_PROXY, unless NO_PROXY
    covers its host), as httpx honoured them."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


class HTTPProvider:
    """The construction and pooling every HTTP provider shares. A subclass names its upstream
    (`name`, `endpoint_path` appended to `base_url`, `request_headers(api_key)`) and its
    `status_error` (which statuses retry, which domain error a final one becomes), then
    speaks its API through `self._upstream`.

    `timeout_s` bounds every wait for bytes (headers, then each stream chunk), not the whole
    answer; `attempts` counts the first call. One pooled `aiohttp.ClientSession` serves all calls:
    pass `client` to share one (it is then not closed by `aclose()`)."""

    name: ClassVar[str]
    endpoint_path: ClassVar[str]
    status_error: ClassVar[type[UpstreamStatusError]]

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        attempts: int = 3,
        client: aiohttp.ClientSession | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 10.0,
    ) -> None:
        self._upstream = UpstreamHTTP(
            base_url.rstrip("/") + self.endpoint_path,
            self.request_headers(api_key),
            name=self.name,
            secret=api_key,
            status_error=self.status_error,
            # No bound on the whole answer; `sock_read` bounds each wait for bytes, `sock_connect`
            # a new connection, `connect` the wait for a free pooled one plus that connection.
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout_s + connect_timeout_s,
                                          sock_connect=connect_timeout_s, sock_read=timeout_s),
            retry=RetryPolicy(attempts, backoff_initial_s, backoff_max_s, max_retry_after_s),
            client=client,
        )

    @staticmethod
    def request_headers(api_key: str) -> dict[str, str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the pooled connections (only those of a client this provider created)."""
        await self._upstream.aclose()

    def _http(self) -> aiohttp.ClientSession:
        return self._upstream.client()


async def read_json(response: aiohttp.ClientResponse) -> Any:
    """The whole body of a 2xx answer, parsed; closes the response."""
    try:
        raw = await response.read()
    except TimeoutError:
        raise UpstreamTimeout("upstream timed out") from None
    except aiohttp.ClientError:
        raise UpstreamError("upstream connection broke while answering") from None
    finally:
        response.release()
    try:
        return orjson.loads(raw)
    except ValueError:
        raise UpstreamError("upstream returned an unreadable answer") from None


async def read_capped(response: aiohttp.ClientResponse) -> bytes:
    """At most `MAX_ERROR_BODY_BYTES` of the body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_ERROR_BODY_BYTES]


def decode_json_object(data: str) -> dict[str, Any] | None:
    """An SSE `data` payload as a JSON object, or None when it is not one."""
    try:
        value = orjson.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class UpstreamEvents:
    """The SSE `data` payloads of one streamed answer, with transport failures named as domain
    errors that count the events already handed on (`received`, kept by the caller).

    Once the caller marks the answer complete (`done = True`) the rest is drained unread so the
    connection returns to the pool; with `complete_when_done` a failure during that drain is
    ignored (the answer was whole), otherwise it still breaks the stream. Iterate inside
    `contextlib.aclosing(events.data())` so the response is closed when the caller stops early.
    """

    def __init__(self, response: aiohttp.ClientResponse, *, complete_when_done: bool) -> None:
        self._response = response
        self._complete_when_done = complete_when_done
        self.received = 0
        self.done = False

    async def data(self) -> AsyncIterator[str]:
        try:
            if "text/event-stream" not in self._response.headers.get("content-type", ""):
                raise UpstreamError("upstream did not answer with an event stream")
            async for data in sse_data(self._response.content.iter_any()):
                if not self.done:
                    yield data
        except TimeoutError:
            if not self._drained_whole():
                raise error_for_transport("timeout", self.received) from None
        except aiohttp.ClientError:
            if not self._drained_whole():
                raise error_for_transport("connection", self.received) from None
        finally:
            self._response.release()  # closes the connection instead when the body was not read whole

    def _drained_whole(self) -> bool:
        return self.done and self._complete_when_done


_LINE_END = re.compile(rb"\r\n|\r|\n")
_SSE_FIELDS = (b"data", b"event", b"id", b"retry")


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The `data` of each event of a `text/event-stream` body arriving in `chunks` (WHATWG HTML,
    "Parsing an event stream"): lines end in CRLF, LF or CR, `:` starts a comment, a blank line
    ends an event, several `data` lines join with "\n"; an unfinished event at the end is dropped.
    By hand because aiohttp has no client-side SSE parser and the SSE libraries for it are
    unmaintained; only `data` matters to the providers (`event` repeats the JSON's `type`)."""
    pending = b""
    data: list[str] = []
    fields = False
    first = True
    async for chunk in chunks:
        if first:
            chunk, first = chunk.removeprefix(b"\xef\xbb\xbf"), False
        pending += chunk
        # A CR at the end may be the first half of a CRLF: keep it for the next chunk.
        held = pending.endswith(b"\r")
        lines = _LINE_END.split(pending[:-1] if held else pending)
        pending = lines.pop() + (b"\r" if held else b"")
        for line in lines:
            if not line:
                if fields:
                    yield "\n".join(data)
                data, fields = [], False
                continue
            name, _, value = line.partition(b":")
            if name not in _SSE_FIELDS:
                continue  # a comment (empty name) or a field SSE does not define
            fields = True
            if name == b"data":
                data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
