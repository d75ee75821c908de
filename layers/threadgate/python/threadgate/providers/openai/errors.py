"""Map what the OpenAI upstream answered (a status and body, or a stream error payload) to the
domain errors, never echoing a secret.

OpenAI specifics: a 429 is either a rate limit (worth retrying) or `insufficient_quota` (the
gateway's OpenAI account is out of credit: retrying cannot help, and it is not the caller's
rate limit either). Error bodies are `{"error": {"message", "type", "param", "code"}}`, also as
a `data:` payload inside a stream. Redaction, `retry-after` parsing, transport failures and the
common status mapping live in `threadgate.providers.errors` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from threadgate.domain.errors import GatewayError, UpstreamError
from threadgate.providers import errors as shared
from threadgate.providers.errors import error_for_transport, parse_retry_after, redact_secrets, stream_broken

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
QUOTA_CODE = "insufficient_quota"


class UpstreamStatusError(shared.UpstreamStatusError):
    """Internal: the upstream answered a non-2xx status. Converted by `error_for_status`."""

    retryable_statuses = RETRYABLE_STATUSES

    def __init__(self, status: int, body: bytes, retry_after_s: float | None):
        super().__init__(status, body, retry_after_s)
        self.error = shared.error_object(body)

    @property
    def retryable(self) -> bool:
        return super().retryable and self.error.get("code") != QUOTA_CODE

    def domain_error(self, secrets: Iterable[str]) -> GatewayError:
        return error_for_status(self.status, self.body, self.retry_after_s, secrets)


def error_for_status(
    status: int, body: bytes, retry_after_s: float | None = None, secrets: Iterable[str] = ()
) -> GatewayError:
    """The domain error for a final (no more retries) non-2xx upstream answer."""
    error = shared.error_object(body)
    if status == 429 and error.get("code") == QUOTA_CODE:
        return UpstreamError("upstream account quota exhausted")
    return shared.error_for_final_status(status, error.get("message"), retry_after_s, secrets, REQUEST_ERROR_STATUSES)


def error_for_stream_payload(payload: dict[str, Any], events_received: int) -> UpstreamError:
    """A `data: {"error": …}` payload: the upstream gave up mid-answer. Only its type is kept."""
    error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    kind = error.get("type") or error.get("code") or "api_error"
    return stream_broken(f"upstream stream error ({redact_secrets(str(kind))[:80]})", events_received)
