"""Map what the OpenAI upstream answered (a status and body, a stream error payload, or a
transport failure) to the domain errors, never echoing a secret.

OpenAI specifics: a 429 is either a rate limit (worth retrying) or `insufficient_quota` (the
gateway's OpenAI account is out of credit: retrying cannot help, and it is not the caller's
rate limit either). Error bodies are `{"error": {"message", "type", "param", "code"}}`, also as
a `data:` payload inside a stream. Redaction and `retry-after` parsing are shared with the
Anthropic provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
from threadgate.providers.anthropic.errors import parse_retry_after, redact_secrets

__all__ = [
    "RETRYABLE_STATUSES",
    "UpstreamStatusError",
    "error_for_status",
    "error_for_stream_payload",
    "error_for_transport",
    "parse_retry_after",
    "stream_broken",
]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_ERROR_STATUSES = frozenset({400, 404, 409, 413, 422})
CREDENTIAL_STATUSES = frozenset({401, 403})
QUOTA_CODE = "insufficient_quota"
MAX_MESSAGE_CHARS = 500


class UpstreamStatusError(Exception):
    """Internal: the upstream answered a non-2xx status. Converted by `error_for_status`."""

    def __init__(self, status: int, body: bytes, retry_after_s: float | None):
        super().__init__(f"upstream status {status}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
        self.error = _error_object(body)

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES and self.error.get("code") != QUOTA_CODE


def _error_object(body: bytes | str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def error_for_status(
    status: int, body: bytes, retry_after_s: float | None = None, secrets: Iterable[str] = ()
) -> GatewayError:
    """The domain error for a final (no more retries) non-2xx upstream answer."""
    error = _error_object(body)
    if status == 429 and error.get("code") == QUOTA_CODE:
        return UpstreamError("upstream account quota exhausted")
    if status == 429:
        retry_after = None if retry_after_s is None else max(1, int(-(-retry_after_s // 1)))
        return RateLimited("upstream rate limit reached; try again later", retry_after=retry_after)
    if status in CREDENTIAL_STATUSES:
        return UpstreamError("upstream rejected the gateway's credentials")
    if status in REQUEST_ERROR_STATUSES:
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = f"upstream rejected the request (status {status})"
        return InvalidRequest(redact_secrets(message, secrets)[:MAX_MESSAGE_CHARS])
    if status >= 500:
        return UpstreamOverloaded(f"upstream unavailable after retries (status {status})")
    return UpstreamError(f"upstream returned an unexpected status {status}")


def error_for_stream_payload(payload: dict[str, Any], events_received: int) -> UpstreamError:
    """A `data: {"error": …}` payload: the upstream gave up mid-answer. Only its type is kept."""
    error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    kind = error.get("type") or error.get("code") or "api_error"
    return stream_broken(f"upstream stream error ({redact_secrets(str(kind))[:80]})", events_received)


def error_for_transport(kind: str, events_received: int = 0) -> GatewayError:
    """A network failure (`kind` is "timeout" or "connection"), described without details that
    could name internal hosts."""
    if events_received:
        return stream_broken(f"upstream stream broke after {events_received} events ({kind})", events_received)
    if kind == "timeout":
        return UpstreamTimeout("upstream timed out")
    return UpstreamOverloaded("upstream unavailable after retries (connection failed)")


def stream_broken(message: str, events_received: int) -> UpstreamError:
    """After the first event the caller holds a partial answer: that is a broken stream."""
    if events_received:
        return UpstreamStreamBroken(message, events_received=events_received)
    return UpstreamError(message)
