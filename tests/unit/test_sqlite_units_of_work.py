"""`Stores.atomic` on SQLite: store calls inside a unit commit together (one transaction); each
call inside stays atomic by itself (a savepoint), so a refused reservation undoes only itself."""

from __future__ import annotations

import sqlite3

import pytest
from threadgate.domain.errors import AccountBudgetExceeded
from threadgate.stores.sqlite import open_sqlite

from tests.contract.records import reservation, setup_key


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "threadgate.db"
    stores = open_sqlite(str(path))
    yield stores, path
    stores.close()


def balances(stores, k) -> tuple[int, int]:
    return stores.keys.get_key(k.account_id, k.id).reserved_micros, stores.keys.get_account(k.account_id).reserved_micros


def test_a_unit_commits_at_its_end_and_a_refused_call_inside_undoes_only_itself(db):
    stores, path = db
    k = setup_key(stores, key_cap=None, account_cap=1_000)
    other = sqlite3.connect(path)  # another process's view
    with stores.atomic():
        stores.ledger.reserve(reservation(k, 600))
        # The key's update passes, the account's fails: that call's savepoint rolls back.
        with pytest.raises(AccountBudgetExceeded):
            stores.ledger.reserve(reservation(k, 500))
        stores.request_counts.add(k.account_id, "2026-04-01")
        assert balances(stores, k) == (600, 600)  # the unit sees its own writes
        assert other.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0  # nothing committed yet
    assert other.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 1
    assert balances(stores, k) == (600, 600)
    assert [d.requests for d in stores.request_counts.daily(k.account_id, "2026-04-01", "2026-04-01")] == [1]


def test_an_exception_leaving_a_unit_rolls_all_of_it_back(db):
    stores, _ = db
    k = setup_key(stores, key_cap=None)
    with pytest.raises(RuntimeError), stores.atomic():
        stores.ledger.reserve(reservation(k, 600), count_request=True)
        raise RuntimeError("the unit fails after the reservation")
    assert balances(stores, k) == (0, 0)
    assert stores.request_counts.daily(k.account_id, "1970-01-01", "2999-12-31") == []
    stores.ledger.reserve(reservation(k, 100))  # and the database takes writes again
    assert balances(stores, k) == (100, 100)
