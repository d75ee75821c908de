"""Idempotency-Key (API.md §12): a repeat replays the first answer without a new upstream call,
charge or turn; the same key with another body is a 409."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

HAIKU = "claude-haiku-4-5"
TURN = {"model": HAIKU, "max_tokens": 40, "content": "what is the capital of France?"}


@pytest.fixture(params=["sqlite", "dynamodb"])
def gateway(request, gateway_on_store):
    """The same behaviour on both storage backends (DynamoDB under moto)."""
    return gateway_on_store(request.param)


def idem(key: str) -> dict[str, str]:
    return {"idempotency-key": key}


def state(c: httpx.Client, thread_id: str) -> tuple[int, int, list[dict[str, Any]]]:
    """(spent by the calling key, thread message count, history)."""
    spent = c.get("/v1/key").json()["spent_micros"]
    history = c.get(f"/v1/threads/{thread_id}/messages").json()["data"]
    return spent, len(history), history


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_key_creation_replays_the_same_key(gateway):
    with gateway.admin() as c:
        body = {"name": "ci", "max_spend_usd": 3}
        first = c.post("/v1/keys", json=body, headers=idem("mint-1"))
        again = c.post("/v1/keys", json=body, headers=idem("mint-1"))
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert [k["id"] for k in c.get("/v1/keys").json()["keys"]].count(first.json()["id"]) == 1
        assert len(c.get("/v1/keys").json()["keys"]) == 2  # master + one
        # The replayed secret is the one that works.
        with gateway.client(again.json()["secret"]) as k:
            assert k.get("/v1/key").json()["id"] == first.json()["id"]
        conflict = c.post("/v1/keys", json={**body, "name": "other"}, headers=idem("mint-1"))
        assert conflict.status_code == 409 and conflict.json()["error"]["type"] == "conflict_error"
        assert len(c.get("/v1/keys").json()["keys"]) == 2
        # Another Idempotency-Key is another request.
        other = c.post("/v1/keys", json=body, headers=idem("mint-2"))
        assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_turn_repeat_replays_without_upstream_call_or_charge(gateway):
    key = gateway.mint(max_spend_usd=5)
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        first = c.post(f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("turn-1"))
        assert first.status_code == 200, first.text
        calls = len(gateway.fake.requests)
        spent, count, history = state(c, t["id"])
        assert (count, calls) == (2, 1) and spent > 0
        for _ in range(2):
            again = c.post(f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("turn-1"))
            assert again.status_code == 200
            assert again.json() == first.json()
            for h in ("x-qlaud-thread-id", "x-qlaud-assistant-seq", "x-qlaud-cost-micros", "x-qlaud-iterations"):
                assert again.headers[h] == first.headers[h]
        assert len(gateway.fake.requests) == calls
        assert state(c, t["id"]) == (spent, count, history)
        with gateway.admin() as admin:
            assert admin.get(f"/v1/keys/{key['id']}/usage").json()["request_count"] == 1
        # Same key, different body: refused, and nothing happens.
        conflict = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "content": "and Spain?"},
                          headers=idem("turn-1"))
        assert conflict.status_code == 409 and conflict.json()["error"]["type"] == "conflict_error"
        assert len(gateway.fake.requests) == calls
        assert state(c, t["id"]) == (spent, count, history)
        # A new key runs a new turn.
        assert c.post(f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("turn-2")).status_code == 200
        assert len(gateway.fake.requests) == calls + 1
        assert state(c, t["id"])[1] == 4


def test_idempotency_keys_are_per_api_key_and_per_thread(gateway):
    a, b = gateway.mint(), gateway.mint()
    with gateway.client(a["secret"]) as ca, gateway.client(b["secret"]) as cb:
        t1 = ca.post("/v1/threads", json={}).json()
        t2 = ca.post("/v1/threads", json={}).json()
        r1 = ca.post(f"/v1/threads/{t1['id']}/messages", json=TURN, headers=idem("shared"))
        # Another API key using the same Idempotency-Key gets its own turn, never A's answer.
        r2 = cb.post(f"/v1/threads/{t1['id']}/messages", json=TURN, headers=idem("shared"))
        # The same API key on another thread too.
        r3 = ca.post(f"/v1/threads/{t2['id']}/messages", json=TURN, headers=idem("shared"))
        assert r1.status_code == r2.status_code == r3.status_code == 200
        assert len({r1.headers["x-qlaud-assistant-seq"], r2.headers["x-qlaud-assistant-seq"]}) == 2
        assert len(gateway.fake.requests) == 3
        assert cb.get("/v1/key").json()["spent_micros"] > 0
        assert ca.get(f"/v1/threads/{t1['id']}").json()["message_count"] == 4
        assert ca.get(f"/v1/threads/{t2['id']}").json()["message_count"] == 2


def test_streamed_turn_replays_as_json(gateway):
    with gateway.client(gateway.mint()["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        streamed = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "stream": True}, headers=idem("s-1"))
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.headers["request-id"].startswith("req_")
        events = sse_events(streamed.text)
        done = events[-1][1]
        assert events[-1][0] == "qlaud.done" and done["incomplete"] is False
        text = "".join(e["delta"].get("text", "") for name, e in events if name == "content_block_delta")
        calls = len(gateway.fake.requests)
        spent, count, history = state(c, t["id"])
        for stream in (True, False):
            again = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "stream": stream}, headers=idem("s-1"))
            assert again.status_code == 200
            assert again.headers["content-type"].startswith("application/json")
            assert again.headers["request-id"] != streamed.headers["request-id"]  # a new request
            message = again.json()
            assert message["type"] == "message" and message["role"] == "assistant"
            assert "".join(b.get("text", "") for b in message["content"]) == text
            assert message["usage"]["output_tokens"] == done["usage"]["output_tokens"]
            assert again.headers["x-qlaud-assistant-seq"] == str(done["seq"])
            assert again.headers["x-qlaud-cost-micros"] == str(done["cost_micros"])
        assert len(gateway.fake.requests) == calls
        assert state(c, t["id"]) == (spent, count, history)


def test_a_failed_request_may_be_retried_with_the_same_key(gateway_factory):
    gateway = gateway_factory(upstream_attempts=1)  # one 529 fails the request
    gateway.runtime.indexer = None
    key = gateway.mint(max_spend_usd=0.000001)
    with gateway.client(key["secret"]) as c, gateway.admin() as admin:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("retry-1"))
        assert r.status_code == 402
        assert admin.patch(f"/v1/keys/{key['id']}", json={"max_spend_usd": 5}).status_code == 200
        r = c.post(f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("retry-1"))
        assert r.status_code == 200, r.text
        assert c.get(f"/v1/threads/{t['id']}").json()["message_count"] == 2
        # An upstream failure is retryable as well, and then replays the success.
        gateway.fake.fail_next(status=529)
        r = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "content": "again"}, headers=idem("retry-2"))
        assert r.status_code == 503
        ok = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "content": "again"}, headers=idem("retry-2"))
        assert ok.status_code == 200
        replay = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "content": "again"}, headers=idem("retry-2"))
        assert replay.json() == ok.json()


def test_repeat_while_the_first_is_running_is_a_conflict(gateway):
    with gateway.client(gateway.mint()["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        gateway.fake.delay_headers(1.0)
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.setdefault("r", c.post(
            f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("busy"))))
        worker.start()
        deadline = time.monotonic() + 10
        while not gateway.fake.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gateway.fake.requests, "the first request never reached upstream"
        with gateway.client(c.headers["x-api-key"]) as c2:
            r = c2.post(f"/v1/threads/{t['id']}/messages", json=TURN, headers=idem("busy"))
        assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error"
        worker.join(30)
        assert first["r"].status_code == 200
        assert len(gateway.fake.requests) == 1
        assert c.get(f"/v1/threads/{t['id']}").json()["message_count"] == 2


def test_passthrough_messages_replay(gateway):
    body = {"model": HAIKU, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client(gateway.mint()["secret"]) as c:
        first = c.post("/v1/messages", json=body, headers=idem("p-1"))
        spent = c.get("/v1/key").json()["spent_micros"]
        again = c.post("/v1/messages", json=body, headers=idem("p-1"))
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert len(gateway.fake.requests) == 1
        assert c.get("/v1/key").json()["spent_micros"] == spent
        assert c.post("/v1/messages", json={**body, "max_tokens": 21}, headers=idem("p-1")).status_code == 409


def test_a_key_whose_request_died_is_taken_over_after_the_lease(gateway):
    """A crash (or Lambda timeout) leaves the claim in progress; a retry must not be locked out
    for 24 hours, only until no live request could still hold it."""
    from threadgate.api.idempotency import idempotency_scope

    key = gateway.mint()
    rt = gateway.runtime
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        path = f"/v1/threads/{t['id']}/messages"
        now = rt.clock.now_ms()
        for idem_key, age_ms in (("fresh", 1_000), ("dead", rt.settings.reservation_ttl_ms + 1_000)):
            scope = idempotency_scope(key["id"], "POST", path, idem_key)
            assert rt.stores.idempotency.claim(scope, "whatever-it-was", now - age_ms, 24 * 3600 * 1000) is None
        r = c.post(path, json=TURN, headers=idem("fresh"))
        assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error"
        r = c.post(path, json=TURN, headers=idem("dead"))
        assert r.status_code == 200, r.text
        assert c.post(path, json=TURN, headers=idem("dead")).json() == r.json()
        assert len(gateway.fake.requests) == 1


def test_stored_answers_are_sealed_under_the_idempotency_key(gateway):
    """The replay of POST /v1/keys must return the secret, yet the store must never hold it (or a
    conversation) readable: only the SHA-256 of a key secret is ever stored (API.md §1)."""
    headers = {"Idempotency-Key": "6f1c7c1e-0c7e-4d8b-9d43-2b1f4c1f0a11"}
    with gateway.admin() as admin:
        first = admin.post("/v1/keys", json={"name": "sealed"}, headers=headers).json()
        again = admin.post("/v1/keys", json={"name": "sealed"}, headers=headers)
    assert again.json()["secret"] == first["secret"] and again.headers["idempotent-replayed"] == "true"
    from threadgate.api.idempotency import idempotency_scope

    rt = gateway.runtime
    admin_key = rt.stores.keys.find_by_hash(__import__("hashlib").sha256(gateway.admin_key.encode()).hexdigest())
    scope = idempotency_scope(admin_key.id, "POST", "/v1/keys", headers["Idempotency-Key"])
    record = rt.stores.idempotency.claim(scope, "-", rt.clock.now_ms(), 1000)  # the stored record
    assert record is not None and record.state == "done"
    stored = json.dumps(record.response)
    assert first["secret"] not in stored and first["secret"][9:] not in stored
    assert headers["Idempotency-Key"] not in scope  # the unsealing key is stored only as a hash
