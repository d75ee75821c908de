"""Create the tables exactly as `schema.TABLES` describes them (tests and local emulators; on AWS
the CDK data construct creates them from the same description)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from threadgate.config import Settings
from threadgate.stores.dynamodb.schema import TABLES, TableSpec


def create_tables(client: Any, settings: Settings) -> list[str]:
    """Create every table whose name is set in `settings`; tables that exist are left alone
    (their TTL is still switched on). Returns the table names."""
    names = []
    for spec in TABLES.values():
        name = getattr(settings, spec.settings_field)
        if not name:
            continue
        _create_table(client, name, spec)
        _enable_ttl(client, name, spec)
        names.append(name)
    return names


def _create_table(client: Any, name: str, spec: TableSpec) -> None:
    attributes = {spec.pk: "S"}
    key_schema = [{"AttributeName": spec.pk, "KeyType": "HASH"}]
    if spec.sk:
        attributes[spec.sk] = spec.sk_type
        key_schema.append({"AttributeName": spec.sk, "KeyType": "RANGE"})
    gsis = []
    for index in spec.gsis:
        attributes[index.pk] = "S"
        index_keys = [{"AttributeName": index.pk, "KeyType": "HASH"}]
        if index.sk:
            attributes[index.sk] = index.sk_type
            index_keys.append({"AttributeName": index.sk, "KeyType": "RANGE"})
        gsis.append({"IndexName": index.name, "KeySchema": index_keys, "Projection": {"ProjectionType": "ALL"}})
    request: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": key_schema,
        "AttributeDefinitions": [{"AttributeName": k, "AttributeType": t} for k, t in attributes.items()],
    }
    if gsis:
        request["GlobalSecondaryIndexes"] = gsis
    if spec.stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    try:
        client.create_table(**request)
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceInUseException":
            raise
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def _enable_ttl(client: Any, name: str, spec: TableSpec) -> None:
    if not spec.ttl_attribute:
        return
    current = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
    )
