"""Ledger contract: the hard cap (invariant 1) and exactly-once billing (invariant 2)."""

from __future__ import annotations

import hashlib

import pytest
from threadgate.domain.errors import AccountBudgetExceeded, KeyCapExceeded
from threadgate.domain.models import ApiKey

from tests.contract.records import APRIL_START, MARCH_END, event, key, reservation, setup_key


def balances(stores, k: ApiKey) -> tuple[int, int, int, int]:
    """(key spent, key reserved, account spent, account reserved)"""
    kr = stores.keys.get_key(k.account_id, k.id)
    ar = stores.keys.get_account(k.account_id)
    return kr.spent_micros, kr.reserved_micros, ar.spent_micros, ar.reserved_micros


def test_reserve_holds_the_estimate_on_key_and_account(stores):
    k = setup_key(stores, key_cap=1_000, account_cap=5_000)
    stores.ledger.reserve(reservation(k, 300))
    stores.ledger.reserve(reservation(k, 200))
    assert balances(stores, k) == (0, 500, 0, 500)


def test_reserve_may_use_the_exact_remaining_budget_but_not_one_micro_more(stores):
    k = setup_key(stores, key_cap=1_000)
    stores.ledger.reserve(reservation(k, 600))
    with pytest.raises(KeyCapExceeded, match="remaining budget cannot cover"):
        stores.ledger.reserve(reservation(k, 401))
    stores.ledger.reserve(reservation(k, 400))
    assert balances(stores, k) == (0, 1_000, 0, 1_000)


def test_key_cap_refusal_changes_nothing(stores):
    k = setup_key(stores, key_cap=1_000, account_cap=10_000)
    first = reservation(k, 700, expires_at=1)
    stores.ledger.reserve(first)
    refused = reservation(k, 400, expires_at=1)
    with pytest.raises(KeyCapExceeded):
        stores.ledger.reserve(refused)
    assert balances(stores, k) == (0, 700, 0, 700)
    assert [r.id for r in stores.ledger.expired_reservations(now_ms=10)] == [first.id]
    assert stores.ledger.release(refused.id) is False


def test_account_budget_refusal_changes_nothing(stores):
    k = setup_key(stores, key_cap=None, account_cap=1_000)
    stores.ledger.reserve(reservation(k, 900))
    with pytest.raises(AccountBudgetExceeded, match="remaining budget cannot cover"):
        stores.ledger.reserve(reservation(k, 101))
    assert balances(stores, k) == (0, 900, 0, 900)


def test_spent_counts_against_the_cap(stores):
    k = setup_key(stores, key_cap=1_000)
    r = reservation(k, 800)
    stores.ledger.reserve(r)
    stores.ledger.settle(r.id, event(r, 700))
    with pytest.raises(KeyCapExceeded):
        stores.ledger.reserve(reservation(k, 301))
    stores.ledger.reserve(reservation(k, 300))


def test_null_caps_are_unlimited(stores):
    k = setup_key(stores, key_cap=None, account_cap=None)
    stores.ledger.reserve(reservation(k, 10**12))
    assert balances(stores, k) == (0, 10**12, 0, 10**12)


def test_cap_changes_apply_to_the_next_reservation(stores):
    k = setup_key(stores, key_cap=1_000, account_cap=None)
    r = reservation(k, 500)
    stores.ledger.reserve(r)
    stores.ledger.settle(r.id, event(r, 500))

    stores.keys.update_key(k.account_id, k.id, cap_micros=400)  # below spend: allowed, now over cap
    with pytest.raises(KeyCapExceeded):
        stores.ledger.reserve(reservation(k, 1))
    stores.keys.update_key(k.account_id, k.id, cap_micros=2_000)
    stores.ledger.reserve(reservation(k, 1_500))
    with pytest.raises(KeyCapExceeded):
        stores.ledger.reserve(reservation(k, 1))
    stores.keys.update_key(k.account_id, k.id, cap_micros=None)
    stores.ledger.reserve(reservation(k, 10**9))

    stores.keys.update_account(k.account_id, cap_micros=2_000)
    with pytest.raises(AccountBudgetExceeded):
        stores.ledger.reserve(reservation(k, 1))


def test_a_revoked_key_cannot_reserve(stores):
    k = setup_key(stores, key_cap=None)
    stores.keys.revoke_key(k.account_id, k.id, now_ms=1)
    with pytest.raises(KeyCapExceeded):
        stores.ledger.reserve(reservation(k, 1))
    assert balances(stores, k) == (0, 0, 0, 0)


def test_a_reservation_must_name_the_keys_own_account(stores):
    k = setup_key(stores, key_cap=None)
    other = setup_key(stores, key_cap=None)
    forged = reservation(k, 10)
    forged.account_id = other.account_id
    with pytest.raises(KeyCapExceeded):
        stores.ledger.reserve(forged)
    assert balances(stores, k) == (0, 0, 0, 0)
    assert balances(stores, other) == (0, 0, 0, 0)


def test_settle_bills_the_actual_cost_exactly_once(stores):
    k = setup_key(stores, key_cap=10_000, account_cap=10_000)
    r = reservation(k, 800, created_at=MARCH_END)
    stores.ledger.reserve(r)
    billed = event(r, 250)

    assert stores.ledger.settle(r.id, billed) is True
    assert balances(stores, k) == (250, 0, 250, 0)
    assert stores.ledger.settle(r.id, event(r, 250)) is False
    assert stores.ledger.release(r.id) is False
    assert balances(stores, k) == (250, 0, 250, 0)
    assert stores.ledger.usage_events(k.account_id, 0, APRIL_START) == [billed]


def test_release_gives_the_estimate_back_exactly_once_and_bills_nothing(stores):
    k = setup_key(stores, key_cap=1_000)
    r = reservation(k, 800)
    stores.ledger.reserve(r)

    assert stores.ledger.release(r.id) is True
    assert balances(stores, k) == (0, 0, 0, 0)
    assert stores.ledger.release(r.id) is False
    assert stores.ledger.settle(r.id, event(r, 100)) is False
    assert balances(stores, k) == (0, 0, 0, 0)
    assert stores.ledger.usage_events(k.account_id, 0, 10**13) == []
    assert stores.ledger.release("res_unknown") is False


def test_expired_reservations_are_listed_oldest_first_up_to_the_limit(stores):
    k = setup_key(stores, key_cap=None)
    late = reservation(k, 1, expires_at=3_000)
    due = reservation(k, 1, expires_at=2_000)
    earliest = reservation(k, 1, expires_at=1_000)
    for r in (late, due, earliest):
        stores.ledger.reserve(r)

    assert stores.ledger.expired_reservations(now_ms=999) == []
    assert stores.ledger.expired_reservations(now_ms=2_000) == [earliest, due]  # expires_at <= now
    assert stores.ledger.expired_reservations(now_ms=5_000, limit=1) == [earliest]

    stores.ledger.settle(earliest.id, event(earliest, 1, status="expired"))
    assert [r.id for r in stores.ledger.expired_reservations(now_ms=5_000)] == [due.id, late.id]


def test_usage_events_window_is_exact_newest_first_and_spans_months(stores):
    k = setup_key(stores, key_cap=None)
    times = [MARCH_END - 1, MARCH_END, APRIL_START, APRIL_START + 1]
    events = []
    for t in times:
        r = reservation(k, 100, created_at=t)
        stores.ledger.reserve(r)
        events.append(event(r, 10))
        stores.ledger.settle(r.id, events[-1])

    listed = stores.ledger.usage_events(k.account_id, MARCH_END, APRIL_START + 1)
    assert listed == [events[2], events[1]]  # from inclusive, to exclusive
    everything = stores.ledger.usage_events(k.account_id, 0, 10**13)
    assert everything == list(reversed(events))
    assert stores.ledger.usage_events(k.account_id, APRIL_START, APRIL_START) == []


def test_usage_events_filter_by_key_and_never_cross_accounts(stores):
    k1 = setup_key(stores, key_cap=None)
    k2 = key(k1.account_id)
    stores.keys.create_key(k2, hashlib.sha256(b"second").hexdigest())
    foreign = setup_key(stores, key_cap=None)
    billed = {}
    for k in (k1, k2, foreign):
        r = reservation(k, 100, created_at=MARCH_END)
        stores.ledger.reserve(r)
        billed[k.id] = event(r, 40)
        stores.ledger.settle(r.id, billed[k.id])

    window = (0, APRIL_START)
    assert stores.ledger.usage_events(k1.account_id, *window, key_id=k2.id) == [billed[k2.id]]
    assert {e.key_id for e in stores.ledger.usage_events(k1.account_id, *window)} == {k1.id, k2.id}
    assert stores.ledger.usage_events(k1.account_id, *window, key_id=foreign.id) == []
    assert stores.ledger.usage_events("acct_nobody", *window) == []
