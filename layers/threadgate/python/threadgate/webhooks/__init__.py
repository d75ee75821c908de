"""Webhooks: signing and its verification helper (stdlib only), the address guard, and delivery.

Receivers only need ``from threadgate.webhooks import verify_request`` (see `signing`). Delivery
(httpx, tenacity) is imported on first use, so that import stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from threadgate.webhooks.address_guard import (
    AddressNotAllowed,
    UnresolvableHost,
    check_webhook_url,
    is_address_allowed,
    resolve_safe,
)
from threadgate.webhooks.signing import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
    verify_request,
)

if TYPE_CHECKING:
    from threadgate.webhooks.delivery import (
        MAX_RESPONSE_BYTES,
        DeliveryResult,
        PreparedDelivery,
        deliver,
        new_webhook_client,
        prepare,
    )

_LAZY = {"deliver", "prepare", "DeliveryResult", "PreparedDelivery", "new_webhook_client", "MAX_RESPONSE_BYTES"}

__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AddressNotAllowed",
    "DeliveryResult",
    "MAX_RESPONSE_BYTES",
    "PreparedDelivery",
    "UnresolvableHost",
    "check_webhook_url",
    "deliver",
    "is_address_allowed",
    "new_webhook_client",
    "prepare",
    "resolve_safe",
    "sign",
    "verify",
    "verify_request",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from threadgate.webhooks import delivery

        return getattr(delivery, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
