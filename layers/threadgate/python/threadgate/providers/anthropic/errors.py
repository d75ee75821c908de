"""Map what the Anthropic upstream answered to the domain errors of `threadgate.domain.errors`.

Anthropic specifics: 529 means the upstream is overloaded (retried, then `UpstreamOverloaded`),
and a stream that gives up mid-answer sends an SSE `error` event. Redaction, `retry-after`
parsing, transport failures and the common status mapping live in `threadgate.providers.errors`
(re-exported here for the callers that import them from this module).
"""

from __future__ import annotations

from collections.abc import Iterable

from threadgate.domain.errors import GatewayError, UpstreamError, UpstreamOverloaded
from threadgate.providers import errors as shared
from threadgate.providers.errors import (
    CREDENTIAL_STATUSES,
    MAX_MESSAGE_CHARS,
    REDACTED,
    error_for_transport,
    parse_retry_after,
    redact_secrets,
    stream_broken,
)

__all__ = [
    "CREDENTIAL_STATUSES",
    "MAX_MESSAGE_CHARS",
    "OVERLOADED_STATUS",
    "REDACTED",
    "REQUEST_ERROR_STATUSES",
    "RETRYABLE_STATUSES",
    "UpstreamStatusError",
    "error_for_status",
    "error_for_stream_event",
    "error_for_transport",
    "parse_retry_after",
    "redact_secrets",
    "upstream_error_message",
]

OVERLOADED_STATUS = 529
# Statuses worth another attempt (before the first byte of an answer only).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, OVERLOADED_STATUS})
REQUEST_ERROR_STATUSES = frozenset({400, 404, 413, 422})


class UpstreamStatusError(shared.UpstreamStatusError):
    """Internal: the upstream answered a non-2xx status. Converted by `error_for_status`."""

    retryable_statuses = RETRYABLE_STATUSES

    def domain_error(self, secrets: Iterable[str]) -> GatewayError:
        return error_for_status(self.status, self.body, self.retry_after_s, secrets)


def upstream_error_message(body: bytes) -> str | None:
    """`error.message` of an Anthropic error body, if the body is one."""
    message = shared.error_object(body).get("message")
    return message if isinstance(message, str) else None


def error_for_status(
    status: int, body: bytes, retry_after_s: float | None = None, secrets: Iterable[str] = ()
) -> GatewayError:
    """The domain error for a final (no more retries) non-2xx upstream answer."""
    if status == OVERLOADED_STATUS:
        return UpstreamOverloaded("upstream is overloaded; try again later")
    return shared.error_for_final_status(
        status, upstream_error_message(body), retry_after_s, secrets, REQUEST_ERROR_STATUSES
    )


def error_for_stream_event(event: dict, events_received: int, secrets: Iterable[str] = ()) -> UpstreamError:
    """An SSE `error` event: the upstream gave up mid-answer."""
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    kind = str(error.get("type") or "api_error")
    return stream_broken(redact_secrets(f"upstream stream error ({kind})", secrets), events_received)
