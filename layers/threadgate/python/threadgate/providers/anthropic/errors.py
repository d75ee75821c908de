"""Map what the Anthropic upstream answered (a status and body, or a transport failure) to the
domain errors of `threadgate.domain.errors`, without ever echoing a secret.

Upstream error messages are shown to our client only for request errors (4xx about the request
itself), after redaction; for credential failures nothing of the body is repeated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from threadgate.domain.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from threadgate.providers import UpstreamStreamBroken

OVERLOADED_STATUS = 529
# Statuses worth another attempt (before the first byte of an answer only).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, OVERLOADED_STATUS})
REQUEST_ERROR_STATUSES = frozenset({400, 404, 413, 422})
CREDENTIAL_STATUSES = frozenset({401, 403})
MAX_MESSAGE_CHARS = 500

# Anything shaped like an API key or bearer token: Anthropic/OpenAI style `sk-…`, our own
# `qlk_…`/`wsk_…` secrets, and `Bearer <token>`.
_SECRET_PATTERN = re.compile(
    r"(?:\b(?:sk|qlk|wsk)[-_][A-Za-z0-9_\-]{8,})|(?:(?i:bearer)\s+[A-Za-z0-9._\-~+/=]{8,})"
)
REDACTED = "[redacted]"


class UpstreamStatusError(Exception):
    """Internal: the upstream answered a non-2xx status. Converted by `error_for_status`."""

    def __init__(self, status: int, body: bytes, retry_after_s: float | None):
        super().__init__(f"upstream status {status}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s


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


def upstream_error_message(body: bytes) -> str | None:
    """`error.message` of an Anthropic error body, if the body is one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        message = document["error"].get("message")
        if isinstance(message, str):
            return message
    return None


def error_for_status(
    status: int, body: bytes, retry_after_s: float | None = None, secrets: Iterable[str] = ()
) -> GatewayError:
    """The domain error for a final (no more retries) non-2xx upstream answer."""
    if status == OVERLOADED_STATUS:
        return UpstreamOverloaded("upstream is overloaded; try again later")
    if status == 429:
        retry_after = None if retry_after_s is None else max(1, int(-(-retry_after_s // 1)))
        return RateLimited("upstream rate limit reached; try again later", retry_after=retry_after)
    if status in CREDENTIAL_STATUSES:
        return UpstreamError("upstream rejected the gateway's credentials")
    if status in REQUEST_ERROR_STATUSES:
        message = upstream_error_message(body) or f"upstream rejected the request (status {status})"
        return InvalidRequest(redact_secrets(message, secrets)[:MAX_MESSAGE_CHARS])
    if status >= 500:
        return UpstreamOverloaded(f"upstream unavailable after retries (status {status})")
    return UpstreamError(f"upstream returned an unexpected status {status}")


def error_for_stream_event(event: dict, events_received: int, secrets: Iterable[str] = ()) -> UpstreamError:
    """An SSE `error` event: the upstream gave up mid-answer."""
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    kind = str(error.get("type") or "api_error")
    message = redact_secrets(f"upstream stream error ({kind})", secrets)
    if events_received:
        return UpstreamStreamBroken(message, events_received=events_received)
    return UpstreamError(message)


def error_for_transport(kind: str, events_received: int = 0) -> GatewayError:
    """A network failure (`kind` is "timeout" or "connection"), described without details that
    could name internal hosts."""
    if events_received:
        return UpstreamStreamBroken(
            f"upstream stream broke after {events_received} events ({kind})",
            events_received=events_received,
        )
    if kind == "timeout":
        return UpstreamTimeout("upstream timed out")
    return UpstreamOverloaded("upstream unavailable after retries (connection failed)")
