"""The API additions the operator console reads (API.md §3, §4, §7.1): usage grouped for charts,
requests/errors/402s per day, key search and paging, webhook delivery records."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest

from tests.fakes.webhook_receivers import WebhookReceiver, running_webhook_receiver

LOCAL = "threadgate-local"
CLAUDE = "claude-haiku-4-5"
SCHEMA = {"type": "object", "properties": {"account_id": {"type": "string"}}}


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def thread_of(gw, key: dict[str, Any]) -> str:
    with gw.client(key["secret"]) as c:
        r = c.post("/v1/threads", json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def turn(gw, key: dict[str, Any], thread_id: str, text: str, *, model: str = LOCAL, **body: Any):
    with gw.client(key["secret"]) as c:
        return c.post(f"/v1/threads/{thread_id}/messages",
                      json={"model": model, "max_tokens": 100, "content": text, **body})


def eventually(read: Callable[[], Any], expected: Any, timeout_s: float = 5.0) -> Any:
    """Counts are written once an answer is complete, a moment after the client has it."""
    deadline = time.monotonic() + timeout_s
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_usage_groups_by_day_model_end_user_and_request(gateway):
    alice = gateway.mint(name="alice", end_user_id="u_alice")
    bob = gateway.mint(name="bob", end_user_id="u_bob")
    shared = gateway.mint(name="backend")  # bound to no end user
    a_thread, b_thread = thread_of(gateway, alice), thread_of(gateway, bob)
    costs: dict[str, int] = {}  # request id -> the cost the turn reported
    for key, thread, text, model in [
        (alice, a_thread, "How do refunds work?", LOCAL),
        (alice, a_thread, "And how long do they take, roughly?", CLAUDE),
        (bob, b_thread, "hello", LOCAL),
        (shared, thread_of(gateway, shared), "a backend call", LOCAL),
    ]:
        r = turn(gateway, key, thread, text, model=model)
        assert r.status_code == 200, r.text
        costs[r.headers["request-id"]] = int(r.headers["x-qlaud-cost-micros"])

    with gateway.admin() as admin:
        total = admin.get("/v1/usage").json()
        by_day_model = admin.get("/v1/usage", params={"group_by": "day,model"}).json()
        by_end_user = admin.get("/v1/usage", params={"group_by": "end_user"}).json()
        alice_only = admin.get("/v1/usage", params={"end_user_id": "u_alice"}).json()
        per_turn = admin.get("/v1/usage", params={"thread_id": a_thread, "group_by": "request"}).json()
        alice_key_cost = admin.get(f"/v1/keys/{alice['id']}/usage").json()["cost_micros"]

    assert total["total_cost_micros"] == sum(costs.values()) > 0
    assert "groups" not in total
    assert {g["day"] for g in by_day_model["groups"]} == {today()}
    assert {g["model"]: g["cost_micros"] for g in by_day_model["groups"]} == {
        m["model"]: m["cost_micros"] for m in total["by_model"]}
    assert {(g["model"], g["request_count"]) for g in by_day_model["groups"]} == {(LOCAL, 3), (CLAUDE, 1)}
    ends = {g["end_user_id"]: g["cost_micros"] for g in by_end_user["groups"]}
    assert set(ends) == {"u_alice", "u_bob", None}
    assert ends["u_alice"] == alice_key_cost == alice_only["total_cost_micros"]
    assert [g["cost_micros"] for g in by_end_user["groups"]] == sorted(ends.values(), reverse=True)
    assert {g["request_id"]: g["cost_micros"] for g in per_turn["groups"]} == {
        rid: cost for rid, cost in list(costs.items())[:2]}
    assert {g["thread_id"] for g in per_turn["groups"]} == {a_thread}


@pytest.mark.parametrize("group_by", ["weekday", "day,color", ""])
def test_unknown_group_by_is_a_400_naming_it(gateway, group_by):
    with gateway.admin() as admin:
        r = admin.get("/v1/usage", params={"group_by": group_by})
    if not group_by:
        assert r.status_code == 200 and "groups" not in r.json()
        return
    assert r.status_code == 400, r.text
    assert "group_by" in r.json()["error"]["message"]


def test_requests_errors_and_402s_are_counted_per_day(gateway):
    key = gateway.mint(name="user")
    broke = gateway.mint(name="broke", max_spend_usd=0.000001)
    thread, broke_thread = thread_of(gateway, key), thread_of(gateway, broke)
    assert turn(gateway, key, thread, "hi").status_code == 200
    with gateway.client(key["secret"]) as c:
        bad = c.post(f"/v1/threads/{thread}/messages", json={"model": LOCAL, "content": "no max_tokens"})
        assert bad.status_code == 400
        passthrough = c.post("/v1/messages", json={"model": LOCAL, "max_tokens": 20,
                                                    "messages": [{"role": "user", "content": "hi"}]})
        assert passthrough.status_code == 200
    assert turn(gateway, broke, broke_thread, "hi").status_code == 402
    assert turn(gateway, broke, broke_thread, "hi", stream=True).status_code == 402
    with gateway.client("qlk_live_" + "0" * 64) as anonymous:  # no account: not counted anywhere
        assert anonymous.post("/v1/messages", json={}).status_code == 401
    with gateway.admin() as admin:
        assert admin.get("/v1/keys").status_code == 200  # not an inference request

        def counts() -> Any:
            return admin.get("/v1/usage/requests").json()["data"]

        data = eventually(counts, [{"day": today(), "day_start_ms": _day_start(today()), "requests": 5,
                                    "errors": 1, "cap_refusals": 2}])
    assert data == [{"day": today(), "day_start_ms": _day_start(today()), "requests": 5, "errors": 1,
                     "cap_refusals": 2}]


def test_each_request_is_counted_once_whatever_it_reserved(gateway):
    """The count rides in a request's first reservation (SQLite): a turn that reserves twice (a
    tool loop), one whose call failed after reserving, and an idempotent replay (no reservation)
    are each one request; the failure is one error."""
    from tests.fakes.fake_anthropic import FakeReply, FakeToolUse

    key = gateway.mint(name="user")
    thread = thread_of(gateway, key)
    gateway.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("not_a_tool_of_this_turn")]), FakeReply(text="done"))
    looped = turn(gateway, key, thread, "loop", model=CLAUDE)
    assert looped.status_code == 200 and looped.headers["x-qlaud-iterations"] == "2", looped.text
    gateway.fake.fail_next(status=400, times=1)
    assert turn(gateway, key, thread, "refused upstream", model=CLAUDE).status_code == 400
    with gateway.client(key["secret"]) as c:
        body = {"model": LOCAL, "max_tokens": 20, "content": "once"}
        first = c.post(f"/v1/threads/{thread}/messages", json=body, headers={"idempotency-key": "k1"})
        again = c.post(f"/v1/threads/{thread}/messages", json=body, headers={"idempotency-key": "k1"})
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    expected = [{"day": today(), "day_start_ms": _day_start(today()), "requests": 4, "errors": 1, "cap_refusals": 0}]
    with gateway.admin() as admin:
        assert eventually(lambda: admin.get("/v1/usage/requests").json()["data"], expected) == expected


def _day_start(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_request_counts_window_is_validated(gateway):
    with gateway.admin() as admin:
        r = admin.get("/v1/usage/requests", params={"from_ms": 10, "to_ms": 5})
        assert r.status_code == 400 and "to_ms" in r.json()["error"]["message"]
        assert admin.get("/v1/usage/requests", params={"from_ms": 0, "to_ms": 1}).json()["data"] == []
    with gateway.client(gateway.mint(name="std")["secret"]) as standard:
        assert standard.get("/v1/usage/requests").status_code == 403


def test_keys_search_filter_and_paging(gateway):
    for i in range(5):
        gateway.mint(name=f"customer {i}", end_user_id=f"u_{i % 2}")
    with gateway.admin() as admin:
        everything = admin.get("/v1/keys").json()
        page = admin.get("/v1/keys", params={"q": "CUSTOMER", "limit": 2, "offset": 2}).json()
        last = admin.get("/v1/keys", params={"q": "customer", "limit": 2, "offset": 4}).json()
        of_u1 = admin.get("/v1/keys", params={"end_user_id": "u_1"}).json()
        by_user_text = admin.get("/v1/keys", params={"q": "u_0"}).json()
    assert everything["total"] == 6 and everything["has_more"] is False  # 5 + the master key
    assert {"reserved_micros", "spent_micros", "revoked"} <= set(everything["keys"][0])
    names = [k["name"] for k in everything["keys"] if k["name"].startswith("customer")]
    assert [k["name"] for k in page["keys"]] == names[2:4] and page["total"] == 5 and page["has_more"] is True
    assert [k["name"] for k in last["keys"]] == names[4:] and last["has_more"] is False
    assert {k["name"] for k in of_u1["keys"]} == {"customer 1", "customer 3"}
    assert {k["name"] for k in by_user_text["keys"]} == {"customer 0", "customer 2", "customer 4"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver(hang_s=10) as running:
        yield running


def test_every_delivery_attempt_is_recorded_with_outcome_status_and_latency(gateway_factory, receiver):
    gw = gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)
    tools = {}
    with gw.admin() as admin:
        for name, path in (("flaky", "/flaky/2"), ("missing", "/status/404"), ("failing", "/tool-error")):
            r = admin.post("/v1/tools", json={"name": name, "description": name, "input_schema": SCHEMA,
                                               "webhook_url": receiver.url(path), "timeout_ms": 5000})
            assert r.status_code == 201, r.text
            tools[name] = r.json()
            receiver.secrets[tools[name]["id"]] = tools[name]["secret"]
    key = gw.mint(name="user")
    thread = thread_of(gw, key)
    r = turn(gw, key, thread, 'use flaky, missing and failing {"account_id": "a1"}',
             tools=[t["id"] for t in tools.values()])
    assert r.status_code == 200, r.text

    with gw.admin() as admin:
        got = {name: admin.get(f"/v1/tools/{t['id']}/deliveries").json()["data"] for name, t in tools.items()}
        assert admin.get("/v1/tools/tool_unknown/deliveries").status_code == 404

    flaky = got["flaky"]
    assert [(d["attempt"], d["outcome"], d["status_code"]) for d in flaky] == [
        (3, "ok", 200), (2, "transient", 503), (1, "transient", 503)]
    (delivered_id,) = {d.delivery_id for d in receiver.deliveries if d.path == "/flaky/2"}
    assert {d["tool_use_id"] for d in flaky} == {delivered_id}
    assert {d["thread_id"] for d in flaky} == {thread} and {d["request_id"] for d in flaky} == {r.headers["request-id"]}
    assert all(d["latency_ms"] >= 0 and d["created_at"] > 0 for d in flaky)
    assert flaky[1]["reason"] == "HTTP 503" and flaky[0]["reason"] is None
    assert [(d["attempt"], d["outcome"], d["status_code"], d["reason"]) for d in got["missing"]] == [
        (1, "failed", 404, "webhook failed: HTTP 404")]
    assert [(d["outcome"], d["status_code"]) for d in got["failing"]] == [("tool_error", 200)]
