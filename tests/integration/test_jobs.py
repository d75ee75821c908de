"""Async jobs over real HTTP (API.md §11): a job answers what the synchronous endpoint answers,
is checked like it up front, is visible only to its key (and its account's admins), can be
cancelled queued or running with billing settled once, and survives a gateway restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.webhook_receivers import running_webhook_receiver

MODEL = "claude-haiku-4-5"
MESSAGES_BODY = {"model": MODEL, "max_tokens": 60, "system": "be brief",
                 "messages": [{"role": "user", "content": "name three rivers"}]}
CHAT_BODY = {"model": MODEL, "max_tokens": 60, "messages": [{"role": "user", "content": "name three rivers"}]}
TURN_BODY = {"model": MODEL, "max_tokens": 60, "content": "name three rivers"}
LONG_REPLY = " ".join(f"word{i}" for i in range(120))


def submit(c, endpoint: str, body: dict[str, Any], **headers: str):
    return c.post("/v1/jobs", json={"endpoint": endpoint, "body": body}, headers=headers)


def accepted(c, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    r = submit(c, endpoint, body)
    assert r.status_code == 202, r.text
    return r.json()


def wait_for(c, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        time.sleep(0.02)


def without(d: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in names}


def usage(gw, key: dict[str, Any]) -> dict[str, Any]:
    with gw.admin() as admin:
        return admin.get(f"/v1/keys/{key['id']}/usage").json()


# --- each endpoint kind ----------------------------------------------------------------------------


def test_a_messages_job_answers_what_the_synchronous_endpoint_answers(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        sync = c.post("/v1/messages", json=MESSAGES_BODY)
        created = accepted(c, "/v1/messages", {**MESSAGES_BODY, "stream": True})  # stream is ignored
        job = wait_for(c, created["id"])

    assert sync.status_code == 200, sync.text
    assert without(created, "id", "created_at") == {"object": "job", "status": "queued", "endpoint": "/v1/messages"}
    assert created["id"].startswith("job_")
    assert job["status"] == "succeeded", job
    assert job["model"] == MODEL and job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["completed_at"]
    assert without(job["response"], "id") == without(sync.json(), "id")
    assert job["cost_micros"] == int(sync.headers["x-qlaud-cost-micros"]) > 0
    assert usage(gateway, key)["request_count"] == 2  # the job billed its call once


def test_a_job_on_the_offline_model_answers_like_the_route(gateway):
    key = gateway.mint()
    body = {**MESSAGES_BODY, "model": "threadgate-local"}
    with gateway.client(key["secret"]) as c:
        sync = c.post("/v1/messages", json=body)
        job = wait_for(c, accepted(c, "/v1/messages", body)["id"])

    assert sync.status_code == 200, sync.text
    assert job["status"] == "succeeded", job
    assert without(job["response"], "id") == without(sync.json(), "id")
    assert gateway.fake.requests == []


def test_a_chat_completions_job_answers_in_the_openai_shape(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        sync = c.post("/v1/chat/completions", json=CHAT_BODY)
        job = wait_for(c, accepted(c, "/v1/chat/completions", CHAT_BODY)["id"])

    assert sync.status_code == 200, sync.text
    assert job["status"] == "succeeded", job
    assert job["response"]["object"] == "chat.completion"
    assert without(job["response"], "id", "created") == without(sync.json(), "id", "created")
    assert job["cost_micros"] == int(sync.headers["x-qlaud-cost-micros"])


def test_a_thread_turn_job_answers_like_the_turn_and_persists_it(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        sync_thread, job_thread = (c.post("/v1/threads", json={}).json()["id"] for _ in range(2))
        sync = c.post(f"/v1/threads/{sync_thread}/messages", json=TURN_BODY)
        job = wait_for(c, accepted(c, f"/v1/threads/{job_thread}/messages", TURN_BODY)["id"])
        history = c.get(f"/v1/threads/{job_thread}/messages").json()["data"]

    assert sync.status_code == 200, sync.text
    assert job["status"] == "succeeded", job
    assert without(job["response"], "id") == without(sync.json(), "id")
    assert [(m["seq"], m["role"]) for m in history] == [(1, "user"), (2, "assistant")]
    assert history[1]["content"] == job["response"]["content"]


def test_a_thread_turn_job_runs_the_tool_loop(gateway_factory):
    gw = gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)
    key = gw.mint()
    with running_webhook_receiver() as receiver:
        with gw.admin() as admin:
            tool = admin.post("/v1/tools", json={
                "name": "lookup", "description": "looks things up", "input_schema": {"type": "object"},
                "webhook_url": receiver.url("/echo"), "timeout_ms": 5000}).json()
        receiver.secrets[tool["id"]] = tool["secret"]
        gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup", {"q": "rivers"})]), FakeReply(text="Nile, Amazon."))
        with gw.client(key["secret"]) as c:
            thread = c.post("/v1/threads", json={}).json()["id"]
            job = wait_for(c, accepted(c, f"/v1/threads/{thread}/messages", {**TURN_BODY, "tools": [tool["id"]]})["id"])
            history = c.get(f"/v1/threads/{thread}/messages").json()["data"]
        delivered = len(receiver.deliveries)

    assert job["status"] == "succeeded", job
    assert job["response"]["content"] == [{"type": "text", "text": "Nile, Amazon."}]
    assert delivered == 1
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert usage(gw, key)["request_count"] == 2
    assert job["cost_micros"] == usage(gw, key)["cost_micros"]


# --- refused up front: nothing stored ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "field"),
    [
        ("/v1/messages", {**MESSAGES_BODY, "max_tokens": "many"}, 400, "body.max_tokens"),
        ("/v1/messages", without(MESSAGES_BODY, "messages"), 400, "body.messages"),
        ("/v1/chat/completions", {**CHAT_BODY, "temperature": 9}, 400, "body.temperature"),
        ("/v1/threads/thr_missing/messages", TURN_BODY, 404, None),
        ("/v1/messages", {**MESSAGES_BODY, "model": "no-such-model"}, 404, None),
        ("/v1/embeddings", MESSAGES_BODY, 400, "endpoint"),
    ],
)
def test_a_job_the_synchronous_route_would_refuse_is_refused_now(gateway, endpoint, body, status, field):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        r = submit(c, endpoint, body)
        listed = c.get("/v1/jobs").json()

    assert r.status_code == status, r.text
    if field:
        assert r.json()["error"]["message"].startswith(f"{field}:"), r.text
    assert listed["data"] == []


def test_an_unknown_tool_is_refused_naming_the_inner_field(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
        r = submit(c, f"/v1/threads/{thread}/messages", {**TURN_BODY, "tools": ["tool_nope"]})
        sync = c.post(f"/v1/threads/{thread}/messages", json={**TURN_BODY, "tools": ["tool_nope"]})

    assert r.status_code == sync.status_code == 400
    assert r.json()["error"]["message"] == "body." + sync.json()["error"]["message"]


# --- visibility ------------------------------------------------------------------------------------


def test_a_job_is_visible_to_its_key_and_the_accounts_admins_only(gateway):
    owner, other = gateway.mint(), gateway.mint()
    with gateway.client(owner["secret"]) as c:
        job = wait_for(c, accepted(c, "/v1/messages", MESSAGES_BODY)["id"])
    with gateway.client(other["secret"]) as c:
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert c.get("/v1/jobs").json()["data"] == []
    with gateway.admin() as admin:
        assert admin.get(f"/v1/jobs/{job['id']}").json() == job


def test_list_is_newest_first_with_a_limit(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        ids = [accepted(c, "/v1/messages", MESSAGES_BODY)["id"] for _ in range(3)]
        for job_id in ids:
            wait_for(c, job_id)
        page = c.get("/v1/jobs", params={"limit": 2}).json()
        everything = c.get("/v1/jobs").json()

    assert [j["id"] for j in everything["data"]] == ids[::-1]
    assert [j["id"] for j in page["data"]] == ids[:0:-1] and page["has_more"] is True
    assert everything["has_more"] is False


# --- cancellation and caps -------------------------------------------------------------------------


def test_cancel_a_queued_job_and_it_never_runs(gateway):
    key = gateway.mint()
    gateway.fake.delay_headers(3, times=4)  # four jobs hold the four worker slots
    with gateway.client(key["secret"]) as c:
        busy = [accepted(c, "/v1/messages", MESSAGES_BODY)["id"] for _ in range(4)]
        for job_id in busy:
            wait_for(c, job_id, statuses=("running",))
        queued = accepted(c, "/v1/messages", MESSAGES_BODY)["id"]
        r = c.delete(f"/v1/jobs/{queued}")
        for job_id in busy:
            assert c.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        again = c.get(f"/v1/jobs/{queued}").json()
        refused = c.delete(f"/v1/jobs/{queued}")

    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert again["started_at"] is None and again["response"] is None and again["status"] == "cancelled"
    assert len(gateway.fake.requests) == 4  # the cancelled job never called upstream
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict_error"
    u = usage(gateway, key)
    assert u["reserved_micros"] == 0 and u["request_count"] == 0  # nothing was served before the cancels


def test_a_job_whose_key_was_revoked_while_queued_runs_nothing(gateway):
    busy_key, key = gateway.mint(), gateway.mint()
    gateway.fake.delay_headers(3, times=4)
    with gateway.client(busy_key["secret"]) as busy:
        held = [accepted(busy, "/v1/messages", MESSAGES_BODY)["id"] for _ in range(4)]
        for job_id in held:
            wait_for(busy, job_id, statuses=("running",))
        with gateway.client(key["secret"]) as c:
            job_id = accepted(c, "/v1/messages", MESSAGES_BODY)["id"]
        with gateway.admin() as admin:
            assert admin.delete(f"/v1/keys/{key['id']}").status_code == 200
            for held_id in held:
                busy.delete(f"/v1/jobs/{held_id}")
            job = wait_for(admin, job_id)

    assert job["status"] == "failed" and job["error"]["type"] == "authentication_error"
    assert len(gateway.fake.requests) == 4


def test_cancel_a_running_thread_job_bills_what_was_streamed_once_and_keeps_the_thread_valid(gateway):
    key = gateway.mint()
    gateway.fake.enqueue(FakeReply(text=LONG_REPLY))
    gateway.fake.slow_stream(0.2)  # ~25 s for the whole answer: the job is mid-stream when cancelled
    with gateway.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
        job_id = accepted(c, f"/v1/threads/{thread}/messages", TURN_BODY)["id"]
        wait_for(c, job_id, statuses=("running",))
        while not gateway.fake.requests:
            time.sleep(0.02)
        time.sleep(0.8)  # a few events arrive
        cancelled = c.delete(f"/v1/jobs/{job_id}")
        next_turn = c.post(f"/v1/threads/{thread}/messages", json=TURN_BODY)  # the lock was released
        final = c.get(f"/v1/jobs/{job_id}").json()

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert next_turn.status_code == 200, next_turn.text
    u = usage(gateway, key)
    statuses = sorted(e["status"] for e in u["events"])
    assert statuses == ["incomplete", "ok"]  # the cancelled call billed once, for what it streamed
    cancelled_event = next(e for e in u["events"] if e["status"] == "incomplete")
    assert cancelled_event["output_tokens"] >= 1
    assert final["cost_micros"] == cancelled_event["cost_micros"] > 0
    assert u["reserved_micros"] == 0
    assert final["status"] == "cancelled" and final["response"] is None


def test_a_job_beyond_the_keys_cap_fails_with_the_402_error_object(gateway):
    key = gateway.mint(max_spend_usd=0.000001)
    with gateway.client(key["secret"]) as c:
        job = wait_for(c, accepted(c, "/v1/messages", MESSAGES_BODY)["id"])
        chat = wait_for(c, accepted(c, "/v1/chat/completions", CHAT_BODY)["id"])

    assert job["status"] == "failed" and job["response"] is None
    assert job["error"]["type"] == "key_cap_exceeded" and job["error"]["message"]
    assert chat["error"]["type"] == chat["error"]["code"] == "key_cap_exceeded"  # OpenAI-shaped, like the route
    assert job["cost_micros"] == 0
    assert gateway.fake.requests == []


def test_an_upstream_failure_fails_the_job_with_the_routes_error_object(gateway_factory):
    gateway = gateway_factory(upstream_attempts=1)
    key = gateway.mint()
    gateway.fake.fail_next(529)
    with gateway.client(key["secret"]) as c:
        job = wait_for(c, accepted(c, "/v1/messages", MESSAGES_BODY)["id"])
        gateway.fake.fail_next(529)
        sync_error = c.post("/v1/messages", json=MESSAGES_BODY)

    assert job["status"] == "failed" and job["response"] is None
    assert job["error"] == sync_error.json()["error"]
    assert job["error"]["type"] == "overloaded_error"
    assert job["cost_micros"] == 0 and usage(gateway, key)["reserved_micros"] == 0


def test_cancel_during_a_tool_call_keeps_the_thread_usable(gateway_factory):
    gw = gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)
    key = gw.mint()
    with running_webhook_receiver() as receiver:
        with gw.admin() as admin:
            tool = admin.post("/v1/tools", json={
                "name": "lookup", "description": "looks things up", "input_schema": {"type": "object"},
                "webhook_url": receiver.url("/slow/1"), "timeout_ms": 5000}).json()
        receiver.secrets[tool["id"]] = tool["secret"]
        gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup", {"q": "rivers"})]))
        with gw.client(key["secret"]) as c:
            thread = c.post("/v1/threads", json={}).json()["id"]
            job_id = accepted(c, f"/v1/threads/{thread}/messages", {**TURN_BODY, "tools": [tool["id"]]})["id"]
            while not receiver.deliveries:  # the model asked for the tool; the webhook is busy
                time.sleep(0.02)
            cancelled = c.delete(f"/v1/jobs/{job_id}").json()
            next_turn = c.post(f"/v1/threads/{thread}/messages", json=TURN_BODY)
            history = c.get(f"/v1/threads/{thread}/messages").json()["data"]

    assert cancelled["status"] == "cancelled"
    assert next_turn.status_code == 200, next_turn.text
    # The cancel answered the pending tool_use in the thread itself (never an orphan), and the
    # webhook's late answer was ignored; upstream got it merged with the next user turn.
    sent = gw.fake.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["is_error"] is True
    assert [m["role"] for m in history] == ["user", "assistant", "user", "user", "assistant"]
    assert history[2]["content"][0]["content"] == "not executed: the turn was cancelled"
    u = usage(gw, key)
    assert u["request_count"] == 2 and u["reserved_micros"] == 0  # the tool_use call, then the next turn
    (job_event,) = [e for e in u["events"] if e["request_id"] != next_turn.headers["request-id"]]
    assert job_event["status"] == "ok" and cancelled["cost_micros"] == job_event["cost_micros"] > 0


def test_idempotency_key_returns_the_first_job(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        first = submit(c, "/v1/messages", MESSAGES_BODY, **{"Idempotency-Key": "job-1"})
        repeat = submit(c, "/v1/messages", {**MESSAGES_BODY, "stream": True}, **{"Idempotency-Key": "job-1"})
        other = submit(c, "/v1/messages", {**MESSAGES_BODY, "max_tokens": 61}, **{"Idempotency-Key": "job-1"})
        wait_for(c, first.json()["id"])
        listed = c.get("/v1/jobs").json()["data"]

    assert first.status_code == repeat.status_code == 202
    assert repeat.json() == first.json() and repeat.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert len(listed) == 1


# --- restart -----------------------------------------------------------------------------------------


def test_jobs_left_by_a_stopped_gateway_run_on_the_next_start(tmp_path: Path, fake_anthropic):
    from threadgate.bootstrap import ensure_first_admin
    from threadgate.runtime import build
    from threadgate.stores.sqlite import open_sqlite

    from tests.conftest import Gateway, gateway_app, make_settings
    from tests.fakes.servers import serve_asgi

    fake_anthropic.reset()
    db = str(tmp_path / "data" / "threadgate.db")

    def runtime():
        rt = build(make_settings(tmp_path, anthropic_api_key=fake_anthropic.api_key,
                                 anthropic_base_url=fake_anthropic.base_url))
        rt.stores.close()
        rt.stores = open_sqlite(db)  # one data file shared by both runs, as across a restart
        return rt

    first = runtime()
    admin = ensure_first_admin(first.stores, first.clock, first.settings)
    fake_anthropic.delay_headers(5, times=4)
    with serve_asgi(gateway_app(first)) as url:  # closes `first` (its stores too) as it stops
        gw = Gateway(url=url, admin_key=admin, runtime=first, fake=fake_anthropic)
        key = gw.mint()
        with gw.client(key["secret"]) as c:
            running = [accepted(c, "/v1/messages", MESSAGES_BODY)["id"] for _ in range(4)]
            for job_id in running:
                wait_for(c, job_id, statuses=("running",))
            queued = accepted(c, "/v1/messages", MESSAGES_BODY)["id"]

    second = runtime()
    with serve_asgi(gateway_app(second)) as url:
        with Gateway(url=url, admin_key=admin, runtime=second, fake=fake_anthropic).client(key["secret"]) as c:
            jobs = [wait_for(c, job_id) for job_id in running + [queued]]
            sync = c.post("/v1/messages", json=MESSAGES_BODY).json()

    assert [j["status"] for j in jobs] == ["succeeded"] * 5, jobs
    assert all(without(j["response"], "id") == without(sync, "id") for j in jobs)


# --- DynamoDB ------------------------------------------------------------------------------------------


def test_jobs_on_dynamodb_run_list_and_refuse_a_late_cancel(gateway_factory):
    from tests.conftest_dynamo import dynamodb_stores

    with dynamodb_stores() as dynamo:
        gw = gateway_factory(stores=dynamo.stores)
        gw.runtime.indexer = None  # search indexing is tested on its own
        key, other = gw.mint(), gw.mint()
        with gw.client(key["secret"]) as c:
            thread = c.post("/v1/threads", json={}).json()["id"]
            turn = wait_for(c, accepted(c, f"/v1/threads/{thread}/messages", TURN_BODY)["id"])
            plain = wait_for(c, accepted(c, "/v1/messages", MESSAGES_BODY)["id"])
            listed = c.get("/v1/jobs", params={"limit": 1}).json()
            late = c.delete(f"/v1/jobs/{turn['id']}")
        with gw.client(other["secret"]) as c:
            foreign = c.get(f"/v1/jobs/{turn['id']}")

    assert turn["status"] == plain["status"] == "succeeded", (turn, plain)
    assert turn["response"]["hit_max_iterations"] is False
    assert [j["id"] for j in listed["data"]] == [plain["id"]] and listed["has_more"] is True
    assert late.status_code == 409
    assert foreign.status_code == 404


def test_on_aws_jobs_answer_501_until_the_queue_worker_exists(gateway_factory, monkeypatch):
    from tests.conftest_dynamo import REGION, TABLE_NAMES, dynamodb_stores

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with dynamodb_stores() as dynamo:
        gw = gateway_factory(stores=dynamo.stores, mode="aws", **TABLE_NAMES)
        key = gw.mint()
        with gw.client(key["secret"]) as c:
            r = submit(c, "/v1/messages", MESSAGES_BODY)
            listed = c.get("/v1/jobs")
        stored = dynamo.client.scan(TableName=TABLE_NAMES["jobs_table"])["Items"]

    assert r.status_code == listed.status_code == 501
    assert r.json()["error"]["type"] == "api_error"
    assert stored == []
