"""Reserve before a model call, settle after it, sweep what a crash left open (invariants 1, 2)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from fractions import Fraction

from threadgate.domain import billing, request_tally
from threadgate.domain.errors import AccountBudgetExceeded, KeyCapExceeded
from threadgate.domain.keys import new_id
from threadgate.domain.models import ModelInfo, Principal, Reservation, Usage, UsageEvent
from threadgate.domain.usage import day_of
from threadgate.ports import Clock, KeyStore, Ledger


@dataclass
class Meter:
    keys: KeyStore
    ledger: Ledger
    clock: Clock
    markup: Fraction
    reservation_ttl_ms: int

    def reserve(
        self,
        principal: Principal,
        model: ModelInfo,
        *,
        input_bound: int | billing.CallBound,
        max_tokens: int,
        request_id: str,
        reservation_id: str,
        thread_id: str | None,
    ) -> tuple[Reservation, int]:
        """Reserve the call's upper-bound cost; returns the reservation and the max_tokens it
        covers (lowered when the remaining budget cannot cover the requested one).
        `input_bound` is `billing.call_bound(model, request)` (or a bare token bound, priced at
        every service tier and cache write the model has).

        Optimistic: the conditional write alone decides whether the full request fits, so the
        common case costs one atomic write and no reads; balances are read only to lower
        max_tokens once it did not fit."""
        reservation = partial(self._reserve, principal, model, input_bound, request_id, reservation_id, thread_id)
        try:
            return reservation(max_tokens), max_tokens
        except (KeyCapExceeded, AccountBudgetExceeded):
            pass
        key = self.keys.get_key(principal.account_id, principal.key_id)
        account = self.keys.get_account(principal.account_id)
        key_left = billing.remaining(key.cap_micros, key.spent_micros, key.reserved_micros) if key else 0
        account_left = (
            billing.remaining(account.cap_micros, account.spent_micros, account.reserved_micros) if account else 0
        )
        budgets = [b for b in (key_left, account_left) if b is not None]
        budget = min(budgets) if budgets else None
        covered = billing.affordable_max_tokens(model, input_bound, max_tokens, budget, self.markup)
        if covered < 1:
            needed = billing.estimate(model, input_bound, 1, self.markup)
            service, tier = billing.reserved_tier(model, input_bound, 1)
            detail = (
                f"this call needs {needed} micro-dollars reserved (max_tokens 1, up to "
                f"{billing.bound_tokens(input_bound)} input tokens at {model.id}'s {service}/{tier.name} price)"
            )
            if key_left is not None and (account_left is None or key_left <= account_left):
                raise KeyCapExceeded(f"the key's remaining budget ({max(key_left, 0)} micro-dollars) cannot cover this request: {detail}")
            left = max(account_left or 0, 0)
            raise AccountBudgetExceeded(f"the account's remaining budget ({left} micro-dollars) cannot cover this request: {detail}")
        return reservation(covered), covered  # atomic again; raises if a concurrent call won

    def _reserve(
        self,
        principal: Principal,
        model: ModelInfo,
        input_bound: int | billing.CallBound,
        request_id: str,
        reservation_id: str,
        thread_id: str | None,
        max_tokens: int,
    ) -> Reservation:
        now = self.clock.now_ms()
        reservation = Reservation(
            id=reservation_id,
            key_id=principal.key_id,
            account_id=principal.account_id,
            estimate_micros=billing.estimate(model, input_bound, max_tokens, self.markup),
            created_at=now,
            expires_at=now + self.reservation_ttl_ms,
            request_id=request_id,
            model=model.id,
            provider=model.provider,
            thread_id=thread_id,
        )
        tally = request_tally.uncounted(request_id)  # the request's first reservation counts it
        if self.ledger.reserve(reservation, count_request=tally is not None):
            tally.day = day_of(now)  # type: ignore[union-attr]
        return reservation

    def settle(
        self, reservation: Reservation, model: ModelInfo, usage: Usage, *, latency_ms: int, status: str
    ) -> UsageEvent:
        event = self.priced(reservation, model, usage, latency_ms=latency_ms, status=status)
        self.ledger.settle(reservation.id, event)
        return event

    def priced(
        self, reservation: Reservation, model: ModelInfo, usage: Usage, *, latency_ms: int, status: str
    ) -> UsageEvent:
        """The usage event settling `reservation` would store (nothing is written)."""
        priced = billing.price_call(model, usage)
        return usage_event(
            reservation, usage, priced.upstream_micros, billing.apply_markup(priced.upstream_micros, self.markup),
            latency_ms=latency_ms, status=status, now_ms=self.clock.now_ms(),
            price_tier=priced.price_tier, service_tier=priced.service_tier,
        )

    def release(self, reservation: Reservation) -> None:
        self.ledger.release(reservation.id)


def usage_event(
    r: Reservation,
    usage: Usage,
    upstream_micros: int,
    cost_micros: int,
    *,
    latency_ms: int,
    status: str,
    now_ms: int,
    price_tier: str = "base",
    service_tier: str = "default",
) -> UsageEvent:
    return UsageEvent(
        id=new_id("use_"),
        request_id=r.request_id,
        key_id=r.key_id,
        account_id=r.account_id,
        thread_id=r.thread_id,
        model=r.model,
        provider=r.provider,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        upstream_cost_micros=upstream_micros,
        cost_micros=cost_micros,
        latency_ms=latency_ms,
        status=status,
        created_at=now_ms,
        price_tier=price_tier,
        service_tier=service_tier,
    )


def sweep_expired(ledger: Ledger, clock: Clock, limit: int = 100) -> int:
    """Settle reservations a crash left open at their full estimate (recorded as `expired`):
    the upstream may have served the call, and the estimate is its upper bound. The estimate
    already includes the markup, so it is both the upstream and the charged figure here; the
    tier is unknown ("reserved": the dearest the call could reach)."""
    swept = 0
    now = clock.now_ms()
    for r in ledger.expired_reservations(now, limit):
        event = usage_event(
            r, Usage(), r.estimate_micros, r.estimate_micros, latency_ms=0, status="expired", now_ms=now,
            price_tier="reserved",
        )
        if ledger.settle(r.id, event):
            swept += 1
    return swept
