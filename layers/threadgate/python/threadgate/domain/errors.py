"""Domain errors. `api/errors.py` is the one place that maps them to HTTP status and envelope."""

from __future__ import annotations


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class InvalidRequest(GatewayError):
    status, type = 400, "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status, type = 401, "authentication_error"


class KeyCapExceeded(GatewayError):
    status, type = 402, "key_cap_exceeded"


class AccountBudgetExceeded(GatewayError):
    status, type = 402, "account_budget_exceeded"


class PermissionDenied(GatewayError):
    status, type = 403, "permission_error"


class NotFound(GatewayError):
    status, type = 404, "not_found_error"


class Conflict(GatewayError):
    status, type = 409, "conflict_error"


class RequestTooLarge(GatewayError):
    status, type = 413, "request_too_large"


class RateLimited(GatewayError):
    status, type = 429, "rate_limit_error"


class UpstreamError(GatewayError):
    """The upstream answered something unusable (or refused our provider credentials)."""

    status, type = 502, "api_error"


class UpstreamOverloaded(GatewayError):
    status, type = 503, "overloaded_error"


class UpstreamTimeout(GatewayError):
    status, type = 504, "api_error"
