"""Deliver one tool call to its webhook: sign, post, retry, read a bounded answer.

The in-process tool loop calls `deliver()` once per `tool_use` block (it retries here, with
backoff); the webhook queue worker (`background/webhook_worker`) makes ONE `PreparedDelivery.attempt`
per SQS receive, numbered by the receive count. Both give `result.output_text` (with
`result.is_error`) to the model as the `tool_result`. Neither raises for anything the receiver or
the network does; every failure becomes a short `reason` the model can read. Every attempt (and a
refusal before any) is written to the `DeliveryLog` it is given, whichever path makes it.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential, wait_random

from threadgate import __version__
from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import DeliveryOutcome, DeliveryRecord, Tool
from threadgate.ports import DeliveryLog
from threadgate.webhooks.address_guard import (
    AddressNotAllowed,
    Resolver,
    UnresolvableHost,
    WebhookTarget,
    parse_webhook_url,
    resolve_safe,
)
from threadgate.webhooks.signing import ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class DeliveryResult:
    output: Any  # the receiver's `output` (any JSON), its raw text, or the failure reason
    output_text: str  # what the model sees: strings as they are, other JSON serialized
    is_error: bool
    attempts: int  # number of the last attempt made, i.e. its X-Qlaud-Attempt (0: refused before any)
    status: int | None  # HTTP status of the last answer, None when there was none
    reason: str | None  # short failure reason, None on success
    duration_ms: int
    # The failure was transient (timeout, connection, DNS, 5xx, 429): another attempt may succeed.
    retryable: bool = False
    retry_after_s: float | None = None  # the receiver's Retry-After on a 429/503, in seconds


def new_webhook_client(**kwargs: Any) -> httpx.AsyncClient:
    """An AsyncClient fit for `deliver()`: environment proxies off (a proxy would resolve the
    host itself, behind the address guard's back), no redirects, and a cookie jar that keeps
    nothing (one receiver's cookies must never reach another tenant's receiver)."""
    no_cookies = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(trust_env=False, follow_redirects=False, cookies=no_cookies, **kwargs)


def encode_body(
    tool: Tool, *, tool_use_id: str, input: Any, thread_id: str | None, end_user_id: str | None, request_id: str
) -> bytes:
    """The delivery body, serialized once: these exact bytes are signed and sent on every attempt."""
    payload = {
        "tool_id": tool.id,
        "tool_use_id": tool_use_id,
        "name": tool.name,
        "input": input,
        "thread_id": thread_id,
        "end_user_id": end_user_id,
        "request_id": request_id,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def deliver(
    tool: Tool,
    *,
    tool_use_id: str,
    input: Any,
    thread_id: str | None,
    end_user_id: str | None,
    request_id: str,
    client: httpx.AsyncClient,
    allow_private: bool,
    resolver: Resolver | None = None,
    backoff_base_s: float = 0.5,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    delivery_log: DeliveryLog | None = None,
) -> DeliveryResult:
    """POST one tool call to ``tool.webhook_url`` and return what the model should see (the
    in-process path: the attempts run here, in this request).

    A timeout, a connection error, a 5xx or a 429 is retried up to ``max_attempts`` attempts in
    all, waiting about ``backoff_base_s`` × 1, 2, 4… plus up to half of ``backoff_base_s`` of random
    jitter between them; any other answer is final. ``resolver`` (socket.getaddrinfo's shape) is
    for tests. A queue worker, whose queue redelivers, calls `PreparedDelivery.attempt` once per
    receive instead. ``delivery_log`` gets one record per attempt.
    """
    delivery = prepare(
        tool, tool_use_id=tool_use_id, input=input, thread_id=thread_id, end_user_id=end_user_id,
        request_id=request_id, allow_private=allow_private, delivery_log=delivery_log,
    )
    return await delivery.with_retries(
        client=client, resolver=resolver, backoff_base_s=backoff_base_s, max_attempts=max_attempts, sleep=sleep
    )


def prepare(
    tool: Tool, *, tool_use_id: str, input: Any, thread_id: str | None, end_user_id: str | None,
    request_id: str, allow_private: bool, delivery_log: DeliveryLog | None = None,
) -> PreparedDelivery:
    """Check what can be checked before any request, and serialize the body once."""
    refusal, target = None, None
    if not tool.secret:
        # Deleted mid-turn (the store drops its secret) or loaded without it: never send a
        # delivery the receiver cannot verify.
        refusal = "webhook refused: tool unavailable"
    else:
        try:
            target = parse_webhook_url(tool.webhook_url, allow_private=allow_private)
        except InvalidRequest:  # registered under another deployment policy, or edited in the store
            refusal = "webhook refused: URL not allowed"
    body = encode_body(
        tool, tool_use_id=tool_use_id, input=input, thread_id=thread_id, end_user_id=end_user_id,
        request_id=request_id,
    )
    recorder = _Recorder(delivery_log, tool, tool_use_id, thread_id, request_id)
    return PreparedDelivery(tool, tool_use_id, body, target, refusal, allow_private, recorder)


@dataclass(frozen=True)
class PreparedDelivery:
    """One tool call ready to send. `attempt` is THE delivery attempt: the in-process loop
    (`deliver`) and the queue worker (one attempt per receive) both make it."""

    tool: Tool
    tool_use_id: str
    body: bytes  # these exact bytes are signed and sent on every attempt
    target: WebhookTarget | None
    refusal: str | None
    allow_private: bool
    record: _Recorder

    async def with_retries(
        self,
        *,
        client: httpx.AsyncClient,
        resolver: Resolver | None = None,
        backoff_base_s: float = 0.5,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> DeliveryResult:
        """The in-process path: attempts 1…max_attempts here, with backoff (see `deliver`)."""
        # tenacity instead of a hand loop: the stop/wait/retry policy reads as one declaration.
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential(multiplier=backoff_base_s, exp_base=2) + wait_random(0, backoff_base_s / 2),
            retry=retry_if_result(lambda result: result.retryable),
            sleep=sleep,
            retry_error_callback=lambda state: state.outcome.result(),  # gave up: the last attempt's result
        )
        numbers = itertools.count(1)

        async def next_attempt() -> DeliveryResult:
            number = next(numbers)
            return await self.attempt(number, last=number >= max_attempts, client=client, resolver=resolver)

        return await retrying(next_attempt)

    async def attempt(
        self, number: int, *, last: bool, client: httpx.AsyncClient, resolver: Resolver | None = None
    ) -> DeliveryResult:
        """Attempt ``number`` (its X-Qlaud-Attempt), with ``tool.timeout_ms`` in all (DNS, connect,
        send, read). ``last``: no attempt follows, so a failure is logged as the delivery's end.
        Never raises for anything the receiver or the network does."""
        started = time.monotonic()
        if self.target is None:
            outcome = _Outcome.failure(self.refusal or "webhook refused", attempted=False)
            await self.record(number, started, "refused", None, outcome.reason)
        else:
            try:
                outcome = await self._post(self.target, number, client, resolver)
            except _Retryable as failed:
                await self.record(number, started, "transient", failed.status, failed.reason)
                plural = "" if number == 1 else "s"
                outcome = _Outcome.failure(
                    f"webhook failed: {failed.reason} after {number} attempt{plural}", failed.status,
                    retryable=True, retry_after_s=failed.retry_after_s,
                )
            else:
                await self.record(number, started, outcome.kind, outcome.status, outcome.reason)
        result = DeliveryResult(
            output=outcome.output,
            output_text=outcome.output if isinstance(outcome.output, str) else json.dumps(outcome.output, ensure_ascii=False),
            is_error=outcome.is_error,
            attempts=number if outcome.attempted else number - 1,  # a refusal comes before its request
            status=outcome.status,
            reason=outcome.reason,
            duration_ms=int((time.monotonic() - started) * 1000),
            retryable=outcome.retryable,
            retry_after_s=outcome.retry_after_s,
        )
        if outcome.failed and (last or not outcome.retryable):
            # The URL without its query or credentials: they may carry the receiver's own token.
            logger.warning(
                "webhook delivery failed: tool %s (%s) at %s: %s after %d attempt(s)",
                self.tool.name, self.tool.id, _loggable(self.tool.webhook_url), result.reason, result.attempts,
                extra={"tool_id": self.tool.id, "tool_use_id": self.tool_use_id, "reason": result.reason,
                       "attempts": result.attempts, "status": result.status, "duration_ms": result.duration_ms},
            )
        return result

    async def _post(
        self, target: WebhookTarget, attempt: int, client: httpx.AsyncClient, resolver: Resolver | None
    ) -> _Outcome:
        """Vet the addresses, connect to a vetted one, post, read the answer."""
        timeout_s = self.tool.timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                # Re-vetted on every attempt, on the addresses we are about to use (DNS rebinding).
                addresses = await asyncio.to_thread(
                    resolve_safe, target.host, target.port, allow_private=self.allow_private, resolver=resolver
                )
                address = addresses[(attempt - 1) % len(addresses)]  # retries rotate over the addresses
                response = await client.send(
                    self._request(target, address, attempt, timeout_s), stream=True, follow_redirects=False,
                    auth=None,
                )
                try:
                    return await _read_answer(response)
                finally:
                    await response.aclose()
        except AddressNotAllowed:
            return _Outcome.failure("webhook refused: address not allowed", attempted=False)
        except UnresolvableHost:
            raise _Retryable("DNS lookup failed") from None
        except (TimeoutError, httpx.TimeoutException):
            raise _Retryable("timeout") from None
        except httpx.TransportError:
            raise _Retryable("connection error") from None

    def _request(self, target: WebhookTarget, address: str, attempt: int, timeout_s: float) -> httpx.Request:
        timestamp = int(time.time())  # re-signed per attempt so a late retry is not stale
        headers = {
            "host": target.host_header,
            "content-type": "application/json",
            "user-agent": f"threadgate/{__version__}",
            # Compressed answers could expand far past the size limit before we can count them.
            "accept-encoding": "identity",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.tool.secret, timestamp, self.body),
            DELIVERY_HEADER: self.tool_use_id,
            ATTEMPT_HEADER: str(attempt),
        }
        extensions: dict[str, Any] = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        if target.scheme == "https":
            if not target.host_is_ip:
                # We connect to the IP but TLS must name (SNI) and verify the certificate for the host.
                extensions["sni_hostname"] = target.host
            # The pool keys connections by IP: without this, a TLS session set up for one
            # hostname could carry the next delivery to another hostname on the same IP.
            headers["connection"] = "close"
        # Built directly, not with client.build_request: nothing of the client (cookies, default
        # headers, base_url) must mix into a tenant's delivery.
        return httpx.Request("POST", target.url_for(address), headers=headers, content=self.body, extensions=extensions)


@dataclass(frozen=True)
class _Outcome:
    output: Any
    is_error: bool
    status: int | None
    reason: str | None
    attempted: bool = True  # False: refused before any request was sent
    failed: bool = False  # the delivery failed (not: the tool answered is_error)
    retryable: bool = False
    retry_after_s: float | None = None

    @classmethod
    def failure(
        cls, reason: str, status: int | None = None, *, attempted: bool = True, retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> "_Outcome":
        return cls(reason, True, status, reason, attempted, failed=True, retryable=retryable,
                   retry_after_s=retry_after_s)

    @property
    def kind(self) -> DeliveryOutcome:
        if self.failed:
            return "failed" if self.attempted else "refused"
        return "tool_error" if self.is_error else "ok"



class _Retryable(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class _Recorder:
    """Writes one DeliveryRecord per attempt. Best effort: the records are for operators, and a
    store that fails must not fail the tool call (the model's answer depends on it)."""

    log: DeliveryLog | None
    tool: Tool
    tool_use_id: str
    thread_id: str | None
    request_id: str | None

    async def __call__(
        self, attempt: int, started: float, outcome: DeliveryOutcome, status: int | None, reason: str | None
    ) -> None:
        if self.log is None:
            return
        record = DeliveryRecord(
            account_id=self.tool.account_id, tool_id=self.tool.id, tool_use_id=self.tool_use_id,
            attempt=attempt, outcome=outcome, status_code=status, reason=reason,
            latency_ms=int((time.monotonic() - started) * 1000), created_at=time.time_ns() // 1_000_000,
            thread_id=self.thread_id, request_id=self.request_id,
        )
        try:
            await asyncio.to_thread(self.log.record, record)  # a network write on AWS: off the loop
        except Exception as exc:
            logger.warning("delivery record not written: %s", type(exc).__name__,
                           extra={"tool_id": self.tool.id, "tool_use_id": self.tool_use_id})


async def _read_answer(response: httpx.Response) -> _Outcome:
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = _retry_after_s(response.headers.get("retry-after")) if status in (429, 503) else None
        raise _Retryable(f"HTTP {status}", status, retry_after)
    if not 200 <= status < 300:
        return _Outcome.failure(f"webhook failed: HTTP {status}", status)  # redirects included: never followed
    if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        return _Outcome.failure("webhook failed: compressed response", status)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        return _Outcome.failure("webhook failed: response too large", status)
    raw = bytearray()
    async for chunk in response.aiter_raw():
        raw += chunk
        if len(raw) > MAX_RESPONSE_BYTES:
            return _Outcome.failure("webhook failed: response too large", status)
    output, is_error = _tool_output(bytes(raw))
    return _Outcome(output, is_error, status, "tool reported an error" if is_error else None)


def _tool_output(raw: bytes) -> tuple[Any, bool]:
    """`{"output": <any>, "is_error": bool}` is taken apart; any other 2xx body is text output."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if isinstance(document, dict) and "output" in document and isinstance(document.get("is_error", False), bool):
        return document["output"], document.get("is_error", False)
    return raw.decode("utf-8", errors="replace"), False


def _retry_after_s(value: str | None) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _loggable(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
