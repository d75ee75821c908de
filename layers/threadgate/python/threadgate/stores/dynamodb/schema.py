"""DynamoDB table shapes: the single source of truth for the adapter, the CDK data construct and
the moto test fixtures (see DESIGN.md "DynamoDB shape"). Plain data, no boto3 import."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Index:
    name: str
    pk: str
    sk: str | None = None
    sk_type: str = "S"  # "S" | "N"


@dataclass(frozen=True)
class TableSpec:
    logical: str  # construct id / settings field stem
    pk: str = "pk"
    sk: str | None = None
    gsis: tuple[Index, ...] = field(default_factory=tuple)
    ttl_attribute: str | None = None
    stream: bool = False  # NEW_IMAGE stream (feeds the search indexer)
    settings_field: str = ""  # the Settings attribute (env THREADGATE_<FIELD upper>) naming it
    sk_type: str = "S"  # "S" | "N" (the table's own sort key)


TABLES: dict[str, TableSpec] = {
    # pk = KEY#<sha256>  -> {key_id, account_id}   (the auth lookup: one GetItem)
    # pk = KEYID#<id>    -> the key record with cap/spent/reserved; gsi1 lists an account's keys
    # pk = ACCOUNT#<id>  -> the account record with its budget
    "keys": TableSpec(
        logical="keys",
        gsis=(Index("gsi1", "gsi1pk", "gsi1sk"),),
        settings_field="keys_table",
    ),
    # pk = THREAD#<id>, sk = META | MSG#<seq:012d> | LOCK
    # gsi1: "<account>#<end_user>" x "<last_active_at:015d>#<id>"; gsi2: "<account>" x same
    "threads": TableSpec(
        logical="threads",
        sk="sk",
        gsis=(Index("gsi1", "gsi1pk", "gsi1sk"), Index("gsi2", "gsi2pk", "gsi2sk")),
        ttl_attribute="ttl",
        stream=True,
        settings_field="threads_table",
    ),
    # events: pk = KEY#<key>#<yyyy-mm>, sk = <ts:015d>#<request id>; gsi1 by account month
    # request counters: pk = REQS#<account>#<yyyy-mm>, sk = <yyyy-mm-dd>#<shard>
    # reservations: pk = RES#<id>, sk = RES, ttl; gsi1pk = RESERVATIONS, gsi1sk = <expires:015d>#<id>
    "usage": TableSpec(
        logical="usage",
        sk="sk",
        gsis=(Index("gsi1", "gsi1pk", "gsi1sk"),),
        ttl_attribute="ttl",
        settings_field="usage_table",
    ),
    # pk = TOOL#<id>; gsi1: ACCOUNT#<account> x <name> (live tools only carry gsi1 attributes)
    "tools": TableSpec(
        logical="tools",
        gsis=(Index("gsi1", "gsi1pk", "gsi1sk"),),
        settings_field="tools_table",
    ),
    # pk = JOB#<id>; gsi1: KEY#<key> x <created:015d>#<id>
    "jobs": TableSpec(
        logical="jobs",
        gsis=(Index("gsi1", "gsi1pk", "gsi1sk"),),
        ttl_attribute="ttl",
        settings_field="jobs_table",
    ),
    # pk = RUN#<id>, sk = RUN (the run) | EV#<first seq:012d> (a batch of its SSE events)
    #   | OUT#<tool_use_id>#<chunk> (a tool outcome, chunked when large); TTL
    # gsi1: THREAD#<thread id> x <run id> on run items only (a deleted thread's runs go with it)
    "runs": TableSpec(
        logical="runs",
        sk="sk",
        gsis=(Index("gsi1", "gsi1pk", "gsi1sk"),),
        ttl_attribute="ttl",
        settings_field="runs_table",
    ),
    # webhook delivery attempts: pk = TOOL#<account>#<tool>, sk = <created:015d>#<attempt:03d>#<tool_use_id>; TTL 30 days
    "deliveries": TableSpec(
        logical="deliveries",
        sk="sk",
        ttl_attribute="ttl",
        settings_field="deliveries_table",
    ),
    # pk = IDEM#<scope>; TTL 24 h
    "idempotency": TableSpec(
        logical="idempotency",
        ttl_attribute="ttl",
        settings_field="idempotency_table",
    ),
}
