"""DeliveryLog contract: attempts read back newest first, per tool, never across accounts."""

from __future__ import annotations

from dataclasses import replace

from threadgate.domain.models import DELIVERY_RETENTION_MS, DeliveryRecord


def attempt(tool_id: str, n: int, at: int, *, account_id: str = "acct_a", **fields) -> DeliveryRecord:
    return DeliveryRecord(
        account_id=account_id, tool_id=tool_id, tool_use_id=fields.pop("tool_use_id", "toolu_1"), attempt=n,
        outcome=fields.pop("outcome", "transient"), status_code=fields.pop("status_code", 503),
        reason=fields.pop("reason", "HTTP 503"), latency_ms=fields.pop("latency_ms", 12), created_at=at,
        thread_id=fields.pop("thread_id", "thr_1"), request_id=fields.pop("request_id", "req_1"),
    )


def test_attempts_read_back_whole_newest_first(stores):
    first = attempt("tool_x", 1, 1_000)
    second = attempt("tool_x", 2, 1_600)
    final = attempt("tool_x", 3, 2_700, outcome="ok", status_code=200, reason=None, latency_ms=40)
    for record in (first, second, final):
        stores.deliveries.record(record)

    assert stores.deliveries.recent("acct_a", "tool_x", 10) == [final, second, first]
    assert stores.deliveries.recent("acct_a", "tool_x", 2) == [final, second]


def test_same_instant_attempts_list_the_later_attempt_first(stores):
    stores.deliveries.record(attempt("tool_x", 1, 5_000))
    stores.deliveries.record(attempt("tool_x", 2, 5_000))
    assert [r.attempt for r in stores.deliveries.recent("acct_a", "tool_x", 10)] == [2, 1]


def test_records_are_per_tool_and_never_cross_accounts(stores):
    mine = attempt("tool_x", 1, 1_000)
    other_tool = attempt("tool_y", 1, 1_000)
    foreign = attempt("tool_x", 1, 1_000, account_id="acct_b", tool_use_id="toolu_b")
    for record in (mine, other_tool, foreign):
        stores.deliveries.record(record)

    assert stores.deliveries.recent("acct_a", "tool_x", 10) == [mine]
    assert stores.deliveries.recent("acct_b", "tool_x", 10) == [foreign]
    assert stores.deliveries.recent("acct_c", "tool_x", 10) == []


def test_optional_fields_round_trip_as_none(stores):
    refused = attempt("tool_x", 1, 1_000, outcome="refused", status_code=None, reason="webhook refused: URL not allowed",
                      latency_ms=0, thread_id=None, request_id=None)
    stores.deliveries.record(refused)
    assert stores.deliveries.recent("acct_a", "tool_x", 1) == [refused]


def test_records_past_the_retention_are_not_kept(stores, request):
    old = attempt("tool_x", 1, 1_000)
    fresh = replace(old, attempt=2, created_at=1_000 + DELIVERY_RETENTION_MS + 1)
    stores.deliveries.record(old)
    stores.deliveries.record(fresh)
    if "dynamodb" in request.node.callspec.id:
        # DynamoDB deletes by TTL (in the background, so not at once): the item carries its expiry.
        (item,) = [i for i in stores.deliveries._db.scan(TableName=stores.deliveries._table)["Items"]
                   if i["attempt"]["N"] == "1"]
        assert int(item["ttl"]["N"]) == (1_000 + DELIVERY_RETENTION_MS) // 1000
    else:
        assert stores.deliveries.recent("acct_a", "tool_x", 10) == [fresh]
