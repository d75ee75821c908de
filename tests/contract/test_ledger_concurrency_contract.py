"""Invariant 1 under concurrency: 100 callers race to reserve-and-settle against one cap.

The cap affords about 10 reservations at once; each call then costs less than its estimate, so
more than 10 can succeed over time, but never more than the cap pays for."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from threadgate.domain.errors import AccountBudgetExceeded, KeyCapExceeded

from tests.contract.records import account, event, key, reservation

CALLERS = 100
ESTIMATE = 1_000
ACTUAL = 300
CAP = 10 * ESTIMATE + ESTIMATE // 2


@pytest.mark.parametrize(
    ("key_cap", "account_cap", "refusal"),
    [(CAP, None, KeyCapExceeded), (None, CAP, AccountBudgetExceeded)],
    ids=["key-cap", "account-budget"],
)
def test_concurrent_reserve_and_settle_never_overspend(stores, key_cap, account_cap, refusal):
    acct = account(cap=account_cap)
    stores.keys.create_account(acct)
    k = key(acct.id, cap=key_cap)
    stores.keys.create_key(k, hashlib.sha256(k.id.encode()).hexdigest())
    start = threading.Barrier(CALLERS, timeout=30)
    overdrawn: list[tuple[int, int]] = []

    def check_balance() -> None:
        record = stores.keys.get_key(acct.id, k.id) if key_cap else stores.keys.get_account(acct.id)
        if record.spent_micros + record.reserved_micros > CAP:
            overdrawn.append((record.spent_micros, record.reserved_micros))

    def call(i: int) -> bool:
        r = reservation(k, ESTIMATE, created_at=1_000_000 + i)
        start.wait()
        try:
            stores.ledger.reserve(r)
        except refusal:
            return False
        check_balance()
        assert stores.ledger.settle(r.id, event(r, ACTUAL)) is True
        check_balance()
        return True

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        outcomes = list(pool.map(call, range(CALLERS)))

    successes = outcomes.count(True)
    assert 10 <= successes <= CAP // ACTUAL
    assert successes + outcomes.count(False) == CALLERS
    assert overdrawn == []
    events = stores.ledger.usage_events(acct.id, 0, 10**13)
    key_after = stores.keys.get_key(acct.id, k.id)
    account_after = stores.keys.get_account(acct.id)
    assert len(events) == successes
    assert sum(e.cost_micros for e in events) == key_after.spent_micros == account_after.spent_micros
    assert key_after.spent_micros == successes * ACTUAL <= CAP
    assert key_after.reserved_micros == account_after.reserved_micros == 0
