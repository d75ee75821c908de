"""The DynamoDB adapters (AWS mode). `open_dynamodb(settings)` builds the five stores;
`create_tables(client, settings)` creates their tables for tests and local emulators."""

from __future__ import annotations

from typing import Any

from threadgate.config import Settings
from threadgate.stores import Stores

__all__ = ["open_dynamodb", "create_tables"]


def create_tables(client: Any, settings: Settings) -> list[str]:
    """Create (idempotently) every table named in `settings` as `schema.TABLES` describes it."""
    from threadgate.stores.dynamodb.tables import create_tables as create

    return create(client, settings)


def open_dynamodb(settings: Settings, *, session: Any = None, endpoint_url: str | None = None) -> Stores:
    """Build KeyStore, ThreadStore, Ledger, IdempotencyStore, ToolStore, JobStore and RunStore on one boto3 client.

    `session` defaults to a new boto3 Session (region and credentials from the environment);
    `endpoint_url` (else `settings.aws_endpoint_url`) points at an emulator."""
    import boto3
    from botocore.config import Config

    from threadgate.stores.dynamodb._items import Tables
    from threadgate.stores.dynamodb.deliveries import DynamoDeliveryLog
    from threadgate.stores.dynamodb.idempotency import DynamoIdempotencyStore
    from threadgate.stores.dynamodb.jobs import DynamoJobStore
    from threadgate.stores.dynamodb.keys import DynamoKeyStore
    from threadgate.stores.dynamodb.ledger import DynamoLedger
    from threadgate.stores.dynamodb.request_counts import DynamoRequestCounts
    from threadgate.stores.dynamodb.runs import DynamoRunStore
    from threadgate.stores.dynamodb.threads import DynamoThreadStore
    from threadgate.stores.dynamodb.tools import DynamoToolStore, SecretBox

    tables = Tables(**{name: _table_name(settings, name) for name in Tables.__dataclass_fields__})
    session = session or boto3.session.Session()
    endpoint = endpoint_url or settings.aws_endpoint_url
    # A client is thread-safe; its connection pool must be as wide as the threads sharing it.
    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64)
    db = session.client("dynamodb", endpoint_url=endpoint, config=config)
    kms = session.client("kms", endpoint_url=endpoint, config=config) if settings.webhook_kms_key_id else None

    def close() -> None:
        for client in (db, kms):
            if client is not None:
                client.close()

    return Stores(
        keys=DynamoKeyStore(db, tables.keys),
        threads=DynamoThreadStore(db, tables.threads),
        ledger=DynamoLedger(db, usage_table=tables.usage, keys_table=tables.keys),
        idempotency=DynamoIdempotencyStore(db, tables.idempotency),
        tools=DynamoToolStore(db, tables.tools, SecretBox(kms, settings.webhook_kms_key_id)),
        close=close,
        # Optional: a deployment without a jobs table serves everything but /v1/jobs.
        jobs=DynamoJobStore(db, settings.jobs_table) if settings.jobs_table else None,
        deliveries=DynamoDeliveryLog(db, settings.deliveries_table) if settings.deliveries_table else None,
        request_counts=DynamoRequestCounts(db, tables.usage),
        runs=DynamoRunStore(db, _table_name(settings, "runs")),
    )


def _table_name(settings: Settings, name: str) -> str:
    from threadgate.stores.dynamodb.schema import TABLES

    field = TABLES[name].settings_field
    value = getattr(settings, field)
    if not value:
        raise ValueError(f"THREADGATE_{field.upper()} is not set (the DynamoDB table for {name}).")
    return value
