"""Upstream failures → domain errors: what every HTTP provider shares, never echoing a secret.

Each provider's own `errors` module keeps what its API does differently (which statuses retry,
where the message sits in an error body, special cases such as Anthropic's 529 or OpenAI's
`insufficient_quota`) and delegates the common mapping to `error_for_final_status`. Upstream
messages reach our client only for request errors (4xx about the request itself), after
redaction; for credential failures nothing of the body is repeated.

Pure (no httpx): the clients catch transport exceptions and name them with `error_for_transport`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from threadgate.domain.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from threadgate.providers import UpstreamStreamBroken

CREDENTIAL_STATUSES = frozenset({401, 403})
MAX_MESSAGE_CHARS = 500

# Anything shaped like an API key or bearer token: Anthropic/OpenAI style `sk-…`, our own
# `qlk_…`/`wsk_…` secrets, and `Bearer <token>`.
_SECRET_PATTERN = re.compile(
    r"(?:\b(?:sk|qlk|wsk)[-_][A-Za-z0-9_\-]{8,})|(?:(?i:bearer)\s+[A-Za-z0-9._\-~+/=]{8,})"
)
REDACTED = "[redacted]"


class UpstreamStatusError(Exception):
    """Internal: the upstream answered a non-2xx status. Raised inside the retry loop; each
    provider's subclass says which statuses retry and which domain error a final one becomes."""

    # Statuses worth another attempt (before the first byte of an answer only).
    retryable_statuses: frozenset[int] = frozenset()

    def __init__(self, status: int, body: bytes, retry_after_s: float | None):
        super().__init__(f"upstream status {status}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.status in self.retryable_statuses

    def domain_error(self, secrets: Iterable[str]) -> GatewayError:
        """The error our caller sees once no attempt is left (the provider's `error_for_status`)."""
        raise NotImplementedError


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_PATTERN.sub(REDACTED, text)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after` (delta-seconds form only; an HTTP date is ignored)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_object(body: bytes | str) -> dict[str, Any]:
    """The `error` object of a `{"error": {...}}` body (both APIs use it), else `{}`."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def error_for_final_status(
    status: int,
    message: Any,
    retry_after_s: float | None,
    secrets: Iterable[str],
    request_error_statuses: Collection[int],
) -> GatewayError:
    """The domain error for a final (no more retries) non-2xx answer, once the provider has
    handled its special cases. `message` is the upstream's `error.message`, if any."""
    if status == 429:
        retry_after = None if retry_after_s is None else max(1, int(-(-retry_after_s // 1)))
        return RateLimited("upstream rate limit reached; try again later", retry_after=retry_after)
    if status in CREDENTIAL_STATUSES:
        return UpstreamError("upstream rejected the gateway's credentials")
    if status in request_error_statuses:
        if not isinstance(message, str) or not message:
            message = f"upstream rejected the request (status {status})"
        return InvalidRequest(redact_secrets(message, secrets)[:MAX_MESSAGE_CHARS])
    if status >= 500:
        return UpstreamOverloaded(f"upstream unavailable after retries (status {status})")
    return UpstreamError(f"upstream returned an unexpected status {status}")


def stream_broken(message: str, events_received: int) -> UpstreamError:
    """After the first event the caller holds a partial answer: that is a broken stream."""
    if events_received:
        return UpstreamStreamBroken(message, events_received=events_received)
    return UpstreamError(message)


def error_for_transport(kind: str, events_received: int = 0) -> GatewayError:
    """A network failure (`kind` is "timeout" or "connection"), described without details that
    could name internal hosts."""
    if events_received:
        return stream_broken(f"upstream stream broke after {events_received} events ({kind})", events_received)
    if kind == "timeout":
        return UpstreamTimeout("upstream timed out")
    return UpstreamOverloaded("upstream unavailable after retries (connection failed)")
