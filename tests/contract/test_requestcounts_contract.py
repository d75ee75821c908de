"""RequestCounts contract: exact per-day counts under concurrency, per account, by outcome."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from threadgate.domain.errors import KeyCapExceeded
from threadgate.domain.models import DayCounts

from tests.contract.records import APRIL_START, reservation, setup_key


def test_counts_per_day_by_outcome_oldest_first(stores):
    c = stores.request_counts
    c.add("acct_a", "2026-03-31")
    c.add("acct_a", "2026-04-01", error=True)
    c.add("acct_a", "2026-04-01", cap_refusal=True)
    c.add("acct_a", "2026-04-01")

    assert c.daily("acct_a", "2026-03-01", "2026-04-30") == [
        DayCounts("2026-03-31", requests=1),
        DayCounts("2026-04-01", requests=3, errors=1, cap_refusals=1),
    ]
    assert c.daily("acct_a", "2026-04-01", "2026-04-01") == [DayCounts("2026-04-01", 3, 1, 1)]
    assert c.daily("acct_a", "2026-04-02", "2026-12-31") == []


def test_counts_never_cross_accounts(stores):
    stores.request_counts.add("acct_a", "2026-04-01")
    stores.request_counts.add("acct_b", "2026-04-01", error=True)
    assert stores.request_counts.daily("acct_a", "2026-04-01", "2026-04-01") == [DayCounts("2026-04-01", 1)]
    assert stores.request_counts.daily("acct_c", "2026-04-01", "2026-04-01") == []


def test_concurrent_adds_all_count(stores):
    def add(i: int) -> None:
        stores.request_counts.add("acct_a", "2026-04-01", error=i % 4 == 0, cap_refusal=i % 5 == 0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(40)))
    assert stores.request_counts.daily("acct_a", "2026-01-01", "2026-12-31") == [DayCounts("2026-04-01", 40, 10, 8)]


def test_a_window_across_a_year_end_finds_both_years(stores):
    stores.request_counts.add("acct_a", "2025-12-31")
    stores.request_counts.add("acct_a", "2026-01-01")
    assert [d.day for d in stores.request_counts.daily("acct_a", "2025-12-01", "2026-01-31")] == ["2025-12-31", "2026-01-01"]


def test_an_error_of_a_request_counted_already_adds_only_the_error(stores):
    stores.request_counts.add("acct_a", "2026-04-01")
    stores.request_counts.add("acct_a", "2026-04-01", error=True, request=False)
    stores.request_counts.add("acct_a", "2026-04-01", cap_refusal=True, request=False)
    assert stores.request_counts.daily("acct_a", "2026-04-01", "2026-04-01") == [DayCounts("2026-04-01", 1, 1, 1)]


def test_a_reservation_counts_its_request_in_its_own_write_where_the_store_can(stores, request):
    k = setup_key(stores, key_cap=1_000)
    april_first = APRIL_START  # 2026-04-01T00:00:00Z
    counted = stores.ledger.reserve(reservation(k, 300, created_at=april_first), count_request=True)
    with pytest.raises(KeyCapExceeded):  # refused: counts nothing either
        stores.ledger.reserve(reservation(k, 800, created_at=april_first), count_request=True)
    assert stores.ledger.reserve(reservation(k, 100, created_at=april_first)) is False  # not asked
    # SQLite counts in the reservation's transaction; DynamoDB never does (a counter item in every
    # reservation's transaction would be one hot item they conflict on): its caller counts.
    assert counted is (request.node.callspec.params["stores"] == "sqlite")
    day = stores.request_counts.daily(k.account_id, "2026-04-01", "2026-04-01")
    assert day == ([DayCounts("2026-04-01", 1)] if counted else [])
