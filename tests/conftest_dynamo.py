"""DynamoDB (moto) stores for tests: `with dynamodb_stores() as dynamo: dynamo.stores ...`.

Not a conftest (pytest does not load it by itself); import it where a test needs AWS-shaped stores.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator
from unittest import mock

import boto3
from moto import mock_aws
from moto.dynamodb.responses import DynamoHandler
from threadgate.config import Settings
from threadgate.stores import Stores
from threadgate.stores.dynamodb import create_tables, open_dynamodb
from threadgate.stores.dynamodb.schema import TABLES

REGION = "us-east-1"
TABLE_NAMES = {spec.settings_field: f"tg-test-{spec.logical.replace('_', '-')}" for spec in TABLES.values()}


@dataclass
class DynamoHarness:
    stores: Stores
    client: Any  # the low-level dynamodb client, for looking at raw items
    session: Any
    settings: Settings


@contextmanager
def one_request_at_a_time() -> Iterator[None]:
    """DynamoDB applies each request atomically; moto's in-memory backend does not (a transaction
    checks, writes and may roll back by swapping whole tables), so concurrent requests could
    interleave inside it. Serializing moto's request handler restores DynamoDB's guarantee, while
    our adapters still race each other between requests exactly as they would on AWS."""
    lock = threading.RLock()
    original = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> Any:
        with lock:
            return original(self)

    with mock.patch.object(DynamoHandler, "call_action", call_action):
        yield


@contextmanager
def network_latency(seconds: float) -> Iterator[None]:
    """Every DynamoDB request takes `seconds` more, outside the one-at-a-time lock: requests from
    different threads wait in parallel, as round trips to a real endpoint do."""
    inner = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> Any:
        time.sleep(seconds)
        return inner(self)

    with mock.patch.object(DynamoHandler, "call_action", call_action):
        yield


@lru_cache(maxsize=1)
def _session() -> Any:
    # One session for all tests: it caches the service models a new client would load again.
    return boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")


@contextmanager
def dynamodb_stores(*, kms: bool = False, aws_config: dict[str, Any] | None = None,
                    **settings: Any) -> Iterator[DynamoHarness]:
    """Fresh moto tables (as schema.TABLES describes) and the DynamoDB adapters on them.
    `kms=True` also creates a KMS key and sets `webhook_kms_key_id` to it; `aws_config` is moto's
    (e.g. Step Functions executing state machines)."""
    with mock_aws(config=aws_config), one_request_at_a_time():
        session = _session()
        client = session.client("dynamodb")
        if kms:
            settings["webhook_kms_key_id"] = session.client("kms").create_key()["KeyMetadata"]["KeyId"]
        resolved = Settings(mode="test", **{**TABLE_NAMES, **settings})
        create_tables(client, resolved)
        stores = open_dynamodb(resolved, session=session)
        try:
            yield DynamoHarness(stores=stores, client=client, session=session, settings=resolved)
        finally:
            stores.close()
