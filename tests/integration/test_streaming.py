"""Streaming turns: event order, heartbeats, and a client that disconnects mid-stream."""

from __future__ import annotations

import json
import time

import httpx

from tests.integration.test_smoke_turns import sse_events

TURN = {"model": "claude-haiku-4-5", "max_tokens": 100, "content": "tell me a story", "stream": True}


def test_stream_order_and_done_event(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json=TURN)
    assert r.headers["content-type"].startswith("text/event-stream")
    names = [n for n, _ in sse_events(r.text)]
    assert names[0] == "message_start" and names[-2] == "message_stop" and names[-1] == "qlaud.done"
    done = sse_events(r.text)[-1][1]
    assert done["thread_id"] == t["id"] and done["seq"] == 2 and done["iterations"] == 1
    assert done["incomplete"] is False and done["cost_micros"] > 0
    assert done["usage"]["output_tokens"] > 0
    start = sse_events(r.text)[0][1]
    assert start["message"]["model"] == "claude-haiku-4-5"


def test_disconnect_after_first_delta_still_persists_and_bills_everything(gateway):
    gateway.fake.default_reply = " ".join(f"w{i}" for i in range(40))
    gateway.fake.slow_stream(0.05)  # ~2.5 s of streaming: the client leaves long before the end
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        with c.stream("POST", f"/v1/threads/{t['id']}/messages", json=TURN) as r:
            for line in r.iter_lines():
                if line.startswith("event: content_block_delta"):
                    break  # drop the connection after the first delta
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msgs = c.get(f"/v1/threads/{t['id']}/messages").json()["data"]
            if len(msgs) == 2:
                break
            time.sleep(0.1)
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    text = msgs[1]["content"][0]["text"]
    assert text.split() == [f"w{i}" for i in range(40)]  # the FULL reply, not what the client saw
    with gateway.admin() as admin:
        usage = admin.get(f"/v1/keys/{key['id']}/usage").json()
    assert usage["request_count"] == 1
    (event,) = usage["events"]
    assert event["output_tokens"] == 40 and event["status"] == "ok"
    assert usage["spent_micros"] == event["cost_micros"] > 0


def test_broken_upstream_stream_keeps_thread_valid_and_bills_what_was_used(gateway):
    gateway.fake.default_reply = " ".join(f"w{i}" for i in range(30))
    gateway.fake.break_stream_after(6)
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json=TURN)
        events = sse_events(r.text)
        names = [n for n, _ in events]
        assert "qlaud.error" in names and names[-1] == "qlaud.done"
        assert events[-1][1]["incomplete"] is True
        # The next turn works: history stays valid for the provider.
        gateway.fake.default_reply = None
        r2 = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "stream": False})
        assert r2.status_code == 200, r2.text
    sent = gateway.fake.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    with gateway.admin() as admin:
        usage = admin.get(f"/v1/keys/{key['id']}/usage").json()
    statuses = sorted(e["status"] for e in usage["events"])
    assert statuses == ["incomplete", "ok"]
    assert usage["spent_micros"] == sum(e["cost_micros"] for e in usage["events"])


def test_upstream_overloaded_before_first_byte_is_a_plain_503(gateway):
    gateway.fake.fail_next(status=529, times=10)
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json=TURN)
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "overloaded_error"
    with gateway.admin() as admin:
        usage = admin.get(f"/v1/keys/{key['id']}/usage").json()
    assert usage["request_count"] == 0 and usage["reserved_micros"] == 0 and usage["spent_micros"] == 0


def test_heartbeat_pings_while_upstream_is_silent(gateway_factory):
    gateway = gateway_factory(ping_interval_s=0.2)
    gateway.fake.slow_stream(0.5)
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "max_tokens": 3})
    assert "ping" in [n for n, _ in sse_events(r.text)]


def test_official_anthropic_sdk_reads_a_turn_stream_and_passthrough(gateway):
    import anthropic

    key = gateway.mint()
    client = anthropic.Anthropic(api_key=key["secret"], base_url=gateway.url, max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=50,
                                messages=[{"role": "user", "content": "hi sdk"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.usage.output_tokens > 0 and final.model == "claude-haiku-4-5"
    msg = client.messages.create(model="threadgate-local", max_tokens=20,
                                 messages=[{"role": "user", "content": "hello"}])
    assert msg.content[0].text.startswith("Echo: hello")


def test_a_failed_first_call_leaves_no_trace_and_a_retry_sends_the_text_once(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        gateway.fake.fail_next(status=400, message="temperature and top_p together are not allowed")
        r = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "stream": False, "content": "hello"})
        assert r.status_code == 400 and "not allowed" in r.json()["error"]["message"]
        assert c.get(f"/v1/threads/{t['id']}").json()["message_count"] == 0  # nothing changed
        r = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "content": "hello"})
        assert r.status_code == 200
        assert gateway.fake.requests[-1].body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]}]
        assert [m["seq"] for m in c.get(f"/v1/threads/{t['id']}/messages").json()["data"]] == [1, 2]


def test_a_slow_upstream_start_gets_pings_instead_of_silence(gateway_factory):
    """The response starts (with pings) when the upstream takes longer than the ping interval to
    answer at all; the turn then streams normally."""
    gateway = gateway_factory(ping_interval_s=0.2)
    gateway.fake.delay_headers(0.7)
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json={**TURN, "max_tokens": 3})
    names = [n for n, _ in sse_events(r.text)]
    assert r.status_code == 200 and names[0] == "ping"
    assert "message_start" in names and names[-1] == "qlaud.done"


def test_the_request_handler_outlives_a_disconnected_client_until_the_turn_is_done(gateway):
    """On Lambda the invocation lasts as long as the app answers: the ASGI call must not return
    at the disconnect, or the rest of the turn would be frozen. Driven at the ASGI level."""
    import asyncio

    from threadgate.api.app import create_app

    gateway.fake.default_reply = " ".join(f"w{i}" for i in range(20))
    gateway.fake.slow_stream(0.05)
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
    app = create_app(gateway.runtime)
    body = json.dumps(TURN).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": f"/v1/threads/{thread}/messages", "raw_path": b"",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"x-api-key", key["secret"].encode()), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def run() -> int:
        sent: list[dict] = []
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if b"content_block_delta" in message.get("body", b""):
                gone.set()  # the client leaves after the first delta

        await app(scope, receive, send)
        await gateway.runtime.aclose_upstreams()  # the pool this loop made ends with it
        # The call returned: by now the whole reply must be persisted.
        return len(gateway.runtime.stores.threads.list_messages(account_id, thread))

    import hashlib

    account_id = gateway.runtime.stores.keys.find_by_hash(hashlib.sha256(key["secret"].encode()).hexdigest()).account_id
    assert asyncio.run(run()) == 2
