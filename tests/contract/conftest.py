"""`stores`: every contract test runs once on SQLite and once on DynamoDB (moto)."""

from __future__ import annotations

from typing import Iterator

import pytest
from threadgate.stores import Stores

from tests.conftest_dynamo import DynamoHarness, dynamodb_stores


@pytest.fixture(params=["sqlite", "dynamodb"])
def stores(request: pytest.FixtureRequest, tmp_path) -> Iterator[Stores]:
    if request.param == "sqlite":
        try:
            from threadgate.stores.sqlite import open_sqlite
        except ImportError as err:  # the SQLite adapter is developed alongside
            pytest.skip(f"threadgate.stores.sqlite is not importable yet: {err}")
        # A file (not :memory:) so the suite exercises what local mode really runs: WAL.
        sqlite_stores = open_sqlite(str(tmp_path / "threadgate.db"))
        try:
            yield sqlite_stores
        finally:
            sqlite_stores.close()
    else:
        with dynamodb_stores() as dynamo:
            yield dynamo.stores


@pytest.fixture
def dynamo() -> Iterator[DynamoHarness]:
    """DynamoDB-only checks (storage shape, encryption at rest)."""
    with dynamodb_stores(kms=True) as harness:
        yield harness
