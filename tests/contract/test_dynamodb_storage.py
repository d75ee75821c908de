"""DynamoDB-only promises: tables as schema.TABLES says, secrets encrypted at rest (invariant 5),
and message items the search indexer can read from the table's stream."""

from __future__ import annotations

import base64
import os

import pytest
from boto3.dynamodb.types import TypeDeserializer
from threadgate.domain.errors import RequestTooLarge
from threadgate.domain.models import NewMessage
from threadgate.stores.dynamodb import create_tables
from threadgate.stores.dynamodb.schema import TABLES
from threadgate.stores.dynamodb.threads import message_from_item

from tests.contract.records import thread, tool, user_says


def test_tables_match_the_schema_and_creating_them_again_is_harmless(dynamo):
    client, settings = dynamo.client, dynamo.settings
    names = sorted(getattr(settings, spec.settings_field) for spec in TABLES.values())
    assert sorted(create_tables(client, settings)) == names
    for spec in TABLES.values():
        name = getattr(settings, spec.settings_field)
        table = client.describe_table(TableName=name)["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert [k["AttributeName"] for k in table["KeySchema"]] == [spec.pk] + ([spec.sk] if spec.sk else [])
        assert sorted(g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])) == sorted(
            g.name for g in spec.gsis)
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if spec.ttl_attribute:
            assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", spec.ttl_attribute)
        assert table.get("StreamSpecification", {}).get("StreamEnabled", False) is spec.stream


def test_webhook_secrets_are_kms_encrypted_at_rest(dynamo):
    t = tool("acct_a", "lookup")
    dynamo.stores.tools.create_tool(t)

    raw = dynamo.client.get_item(TableName=dynamo.settings.tools_table, Key={"pk": {"S": f"TOOL#{t.id}"}})["Item"]
    assert "secret" not in raw and t.secret.encode() not in raw["secret_enc"]["B"]
    assert dynamo.stores.tools.get_tool("acct_a", t.id, with_secret=True).secret == t.secret

    dynamo.stores.tools.delete_tool("acct_a", t.id)
    raw = dynamo.client.get_item(TableName=dynamo.settings.tools_table, Key={"pk": {"S": f"TOOL#{t.id}"}})["Item"]
    assert "secret_enc" not in raw  # a deleted tool keeps no secret


def test_message_items_as_the_stream_shows_them_become_messages(dynamo):
    client, table = dynamo.client, dynamo.settings.threads_table
    t = thread("acct_a", end_user_id="alice")
    dynamo.stores.threads.create_thread(t)
    stored = dynamo.stores.threads.append_messages(
        "acct_a",
        t.id,
        [user_says("What is 0.1 + 0.2?"),
         NewMessage(role="assistant", content=[{"type": "text", "text": "0.30000000000000004", "score": 0.5}],
                    kind="assistant", model="claude-test", request_id="req_9")],
        now_ms=7_000,
    )

    # A stream NEW_IMAGE is the item in attribute-value form: read the items the same way
    # (moto does not serve DescribeStream) and decode them as the indexer does (numbers: Decimal).
    raw_items = client.query(
        TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": f"THREAD#{t.id}"}}
    )["Items"]
    deserialize = TypeDeserializer().deserialize
    images = [{k: deserialize(v) for k, v in raw.items()} for raw in raw_items]

    messages = [m for m in map(message_from_item, images) if m is not None]
    assert messages == stored
    assert len(images) > len(messages)  # the thread's META item is read too, and ignored


def test_a_message_too_large_for_an_item_is_refused_and_not_stored(dynamo):
    t = thread("acct_a")
    dynamo.stores.threads.create_thread(t)
    incompressible = base64.b64encode(os.urandom(800_000)).decode()
    with pytest.raises(RequestTooLarge):
        dynamo.stores.threads.append_messages("acct_a", t.id, [user_says(incompressible)], now_ms=1)
    assert dynamo.stores.threads.list_messages("acct_a", t.id) == []
    assert dynamo.stores.threads.get_thread("acct_a", t.id).message_count == 0
