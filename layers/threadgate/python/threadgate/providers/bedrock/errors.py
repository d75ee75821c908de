"""Bedrock failures → domain errors. botocore raises `ClientError` (with the AWS error code) for
an answer, and its own exception types for transport failures; inside a ConverseStream the
service sends exception events, which botocore raises as `EventStreamError` (a ClientError)."""

from __future__ import annotations

from typing import Any

from threadgate.domain.errors import (
    GatewayError,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from threadgate.providers.errors import MAX_MESSAGE_CHARS, error_for_transport, redact_secrets, stream_broken

# Codes worth another attempt before the first event (botocore's own retries already ran).
RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
                       "ModelNotReadyException", "serviceUnavailableException", "internalServerException",
                       "throttlingException"})


def error_for_client_error(exc: Any, model_id: str, events_received: int = 0) -> GatewayError:
    """A botocore ClientError (or EventStreamError) → the domain error a caller can act on."""
    err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    code = str(err.get("Code") or "")
    message = redact_secrets(str(err.get("Message") or ""))[:MAX_MESSAGE_CHARS]
    normalized = code[:1].upper() + code[1:]
    if events_received and normalized != "ValidationException":
        return stream_broken(f"Bedrock stream broke after {events_received} events ({normalized})", events_received)
    if normalized == "ThrottlingException":
        return RateLimited("Bedrock throttled the request; try again later", retry_after=1)
    if normalized == "ValidationException":
        return InvalidRequest(f"Bedrock rejected the request: {message}" if message else "Bedrock rejected the request")
    if normalized in ("AccessDeniedException", "UnrecognizedClientException"):
        return PermissionDenied(
            f"Bedrock denied access to model {model_id!r}: enable model access for it in the Bedrock console "
            "and allow bedrock:InvokeModel on it in the gateway's IAM role"
        )
    if normalized == "ResourceNotFoundException":
        return InvalidRequest(f"Bedrock does not know model {model_id!r} in this region", param="model")
    if normalized in ("ModelTimeoutException",):
        return UpstreamTimeout("Bedrock timed out")
    if normalized in ("ServiceUnavailableException", "InternalServerException", "ModelNotReadyException",
                      "ModelStreamErrorException", "ServiceQuotaExceededException"):
        return UpstreamOverloaded(f"Bedrock unavailable ({normalized})")
    return UpstreamError(f"Bedrock returned an unexpected error ({normalized or 'unknown'})")


def error_for_botocore(exc: BaseException, model_id: str, events_received: int = 0) -> GatewayError:
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

    if isinstance(exc, ClientError):
        return error_for_client_error(exc, model_id, events_received)
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return error_for_transport("timeout", events_received)
    return error_for_transport("connection", events_received)


def is_retryable(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code")) in RETRYABLE
    return not isinstance(exc, GatewayError)
