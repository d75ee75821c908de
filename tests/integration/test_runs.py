"""Thread turns as runs over real HTTP (issue 8 engine side, issue 11 item 1): every event has an
id and a dropped stream resumes with Last-Event-ID without gap or duplicate; the run's status;
cancel (mid model call, mid tool call: the late webhook answer is ignored); 202 with the run for
a non-streaming turn past the route's time; a busy thread answers 409 + Retry-After at once; the
lease is renewed while a turn runs and a dead holder's lock is taken over, its thread repaired
and its reservation settled."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx
import pytest

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.webhook_receivers import running_webhook_receiver

MODEL = "claude-haiku-4-5"
TURN = {"model": MODEL, "max_tokens": 200, "content": "tell me a long story"}
LONG_REPLY = " ".join(f"word{i}" for i in range(60))


# --- helpers ------------------------------------------------------------------------------------


def parse_sse(raw: bytes) -> list[tuple[int | None, str, dict[str, Any]]]:
    """(id, event, data) per frame, as an EventSource client reads them."""
    import json

    frames = []
    for chunk in raw.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in chunk.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            frames.append((int(fields["id"]) if "id" in fields else None, fields["event"], json.loads(fields["data"])))
    return frames


def numbered(frames):
    return [(i, e, d) for i, e, d in frames if i is not None]


def new_thread(c: httpx.Client) -> str:
    r = c.post("/v1/threads", json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_until(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def history(c: httpx.Client, thread_id: str) -> list[dict[str, Any]]:
    r = c.get(f"/v1/threads/{thread_id}/messages", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01, ping_interval_s=0.3)


# --- ids, status, resume ------------------------------------------------------------------------


def test_every_event_of_a_streamed_turn_has_a_dense_id_and_the_run_replays_them(gw):
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text="the sea is wide"))
    with gw.client(key["secret"]) as c:
        thread = new_thread(c)
        r = c.post(f"/v1/threads/{thread}/messages", json={**TURN, "stream": True})
        assert r.status_code == 200, r.text
        run_id = r.headers["x-qlaud-run-id"]
        live = numbered(parse_sse(r.content))
        assert [i for i, _, _ in live] == list(range(1, len(live) + 1))
        assert live[0][1] == "message_start" and live[-1][1] == "qlaud.done"
        status = c.get(f"/v1/threads/{thread}/runs/{run_id}").json()
        replay = numbered(parse_sse(c.get(f"/v1/threads/{thread}/runs/{run_id}/events").content))
        tail = numbered(parse_sse(c.get(f"/v1/threads/{thread}/runs/{run_id}/events",
                                        headers={"Last-Event-ID": str(len(live) - 2)}).content))
        bad = c.get(f"/v1/threads/{thread}/runs/{run_id}/events", headers={"Last-Event-ID": "x1"})
    assert replay == live and tail == live[-2:]
    assert status["object"] == "run" and status["status"] == "completed" and status["thread_id"] == thread
    assert status["iterations"] == 1 and status["cost_micros"] == live[-1][2]["cost_micros"] > 0
    assert status["assistant_seq"] == 2 and status["error"] is None
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"]


def test_a_dropped_stream_resumes_with_last_event_id_without_gap_or_duplicate(gw):
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text=LONG_REPLY))
    gw.fake.slow_stream(0.03)
    seen: list[tuple[int, str, dict[str, Any]]] = []
    with gw.client(key["secret"]) as c:
        thread = new_thread(c)
        with c.stream("POST", f"/v1/threads/{thread}/messages", json={**TURN, "stream": True}) as r:
            run_id = r.headers["x-qlaud-run-id"]
            buffer = b""
            for chunk in r.iter_bytes():
                buffer += chunk
                complete, _, _ = buffer.rpartition(b"\n\n")
                seen = numbered(parse_sse(complete + b"\n\n"))
                if len(seen) >= 8:
                    break  # the client drops the connection mid-answer
        last = seen[-1][0]
        resumed = numbered(parse_sse(c.get(f"/v1/threads/{thread}/runs/{run_id}/events",
                                           headers={"Last-Event-ID": str(last)}).content))
        messages = history(c, thread)
    whole = seen + resumed
    assert resumed[0][0] == last + 1 and resumed[-1][1] == "qlaud.done"
    assert [i for i, _, _ in whole] == list(range(1, len(whole) + 1))  # no gap, no duplicate
    streamed = "".join(d["delta"]["text"] for _, e, d in whole if e == "content_block_delta")
    assert streamed == LONG_REPLY == text_of(messages[-1])


def test_a_run_is_visible_only_through_its_own_thread_and_account(gw):
    owner, other = gw.mint(end_user_id="u1"), gw.mint(end_user_id="u2")
    gw.fake.enqueue(FakeReply(text="hi"))
    with gw.client(owner["secret"]) as c:
        thread = new_thread(c)
        r = c.post(f"/v1/threads/{thread}/messages", json=TURN)
        run_id = r.headers["x-qlaud-run-id"]
        second = new_thread(c)
        assert c.get(f"/v1/threads/{second}/runs/{run_id}").status_code == 404  # another thread
        assert c.get(f"/v1/threads/{thread}/runs/req_missing").status_code == 404
    with gw.client(other["secret"]) as c:
        for path in ("", "/events"):
            assert c.get(f"/v1/threads/{thread}/runs/{run_id}{path}").status_code == 404
        assert c.post(f"/v1/threads/{thread}/runs/{run_id}/cancel").status_code == 404


def test_deleting_the_thread_deletes_its_runs_and_their_events(gw):
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text="a secret answer"))
    with gw.client(key["secret"]) as c:
        thread = new_thread(c)
        run_id = c.post(f"/v1/threads/{thread}/messages", json=TURN).headers["x-qlaud-run-id"]
        assert c.delete(f"/v1/threads/{thread}").status_code == 200
    runs = gw.runtime.stores.runs
    assert runs.get_run(run_id) is None and runs.list_events(run_id) == []


# --- non-streaming past the route's time ---------------------------------------------------------


def test_a_non_streaming_turn_past_the_routes_time_answers_202_with_the_run(gateway_factory):
    gw = gateway_factory(turn_wait_s=0.4)
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text=LONG_REPLY))
    gw.fake.slow_stream(0.03)
    with gw.client(key["secret"]) as c:
        thread = new_thread(c)
        r = c.post(f"/v1/threads/{thread}/messages", json=TURN)
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["object"] == "run" and run["status"] == "running" and run["thread_id"] == thread
        assert r.headers["location"] == f"/v1/threads/{thread}/runs/{run['id']}"
        wait_until(lambda: c.get(r.headers["location"]).json()["status"] == "completed")
        done = c.get(r.headers["location"]).json()
        frames = numbered(parse_sse(c.get(f"{r.headers['location']}/events").content))
        messages = history(c, thread)
    assert done["assistant_seq"] == 2 and text_of(messages[-1]) == LONG_REPLY
    assert frames[-1][1] == "qlaud.done" and frames[-1][2]["cost_micros"] == done["cost_micros"] > 0


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_mid_answer_stops_the_call_bills_what_was_streamed_and_frees_the_thread(gw):
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text=LONG_REPLY), FakeReply(text="next"))
    gw.fake.slow_stream(0.1)  # ~6 s for the whole answer
    with gw.client(key["secret"]) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        thread = new_thread(c)
        pending = pool.submit(c.post, f"/v1/threads/{thread}/messages", json={**TURN, "stream": True})
        wait_until(lambda: gw.runtime.stores.runs.unfinished_runs(10))
        run_id = gw.runtime.stores.runs.unfinished_runs(10)[0].id
        time.sleep(0.6)  # some words arrive
        started = time.monotonic()
        cancelled = c.post(f"/v1/threads/{thread}/runs/{run_id}/cancel")
        frames = parse_sse(pending.result().content)
        took = time.monotonic() - started
        again = c.post(f"/v1/threads/{thread}/runs/{run_id}/cancel")
        after = c.post(f"/v1/threads/{thread}/messages", json=TURN)
        status = c.get(f"/v1/threads/{thread}/runs/{run_id}").json()
        messages = history(c, thread)
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
    assert took < 3, took  # not the ~6 s the answer would have taken
    assert status["status"] == "cancelled" and status["incomplete"] is True
    names = [e for _, e, _ in frames]
    assert names[-2:] == ["qlaud.error", "qlaud.done"] and "message_stop" not in names
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict_error"
    assert after.status_code == 200, after.text
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert 0 < len(text_of(messages[1])) < len(LONG_REPLY)  # what was said before the cancel
    with gw.admin() as admin:
        u = admin.get(f"/v1/keys/{key['id']}/usage").json()
    assert sorted(e["status"] for e in u["events"]) == ["incomplete", "ok"] and u["reserved_micros"] == 0
    incomplete = next(e for e in u["events"] if e["status"] == "incomplete")
    assert incomplete["cost_micros"] == status["cost_micros"] > 0


def test_cancel_during_a_tool_call_ends_at_once_and_ignores_the_late_answer(gw):
    key = gw.mint()
    with running_webhook_receiver() as receiver:
        with gw.admin() as admin:
            tool = admin.post("/v1/tools", json={
                "name": "lookup", "description": "looks things up", "input_schema": {"type": "object"},
                "webhook_url": receiver.url("/slow/3"), "timeout_ms": 10_000}).json()
        receiver.secrets[tool["id"]] = tool["secret"]
        gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup", {"q": "x"}, id="toolu_late")]))
        with gw.client(key["secret"]) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
            thread = new_thread(c)
            pending = pool.submit(c.post, f"/v1/threads/{thread}/messages",
                                  json={**TURN, "tools": [tool["id"]], "stream": True})
            wait_until(lambda: receiver.deliveries)
            run_id = gw.runtime.stores.runs.unfinished_runs(10)[0].id
            started = time.monotonic()
            assert c.post(f"/v1/threads/{thread}/runs/{run_id}/cancel").status_code == 200
            frames = parse_sse(pending.result().content)
            took = time.monotonic() - started
            time.sleep(3)  # the webhook answers now: too late
            messages = history(c, thread)
            status = c.get(f"/v1/threads/{thread}/runs/{run_id}").json()
    assert took < 2.5, took
    assert status["status"] == "cancelled"
    done = [d for _, e, d in frames if e == "qlaud.tool_dispatch_done"]
    assert done == [{"type": "qlaud.tool_dispatch_done", "tool_use_id": "toolu_late", "name": "lookup",
                     "iteration": 1, "is_error": True, "output": "not executed: the turn was cancelled"}]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"][0]["content"] == "not executed: the turn was cancelled"
    assert len(gw.fake.requests) == 1  # no model call after the cancel


# --- the thread lock: fail fast, heartbeat, takeover -------------------------------------------


def test_a_busy_thread_answers_409_with_retry_after_fast_and_keeps_nothing(gateway_factory):
    gw = gateway_factory(turn_lock_wait_s=0.3)
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text=LONG_REPLY))
    gw.fake.slow_stream(0.05)
    with gw.client(key["secret"]) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        thread = new_thread(c)
        first = pool.submit(c.post, f"/v1/threads/{thread}/messages", json=TURN)
        wait_until(lambda: gw.fake.requests)
        started = time.monotonic()
        busy = c.post(f"/v1/threads/{thread}/messages", json={**TURN, "content": "me too"})
        took = time.monotonic() - started
        assert first.result().status_code == 200
        messages = history(c, thread)
        own = c.get("/v1/key").json()
    assert busy.status_code == 409 and busy.json()["error"]["type"] == "conflict_error", busy.text
    assert int(busy.headers["retry-after"]) >= 1
    assert took < 2, took
    assert [text_of(m) for m in messages] == [TURN["content"], LONG_REPLY]  # "me too" left no trace
    assert own["reserved_micros"] == 0


def test_the_lease_is_renewed_while_a_long_turn_runs(gateway_factory):
    gw = gateway_factory(turn_lease_ms=600, turn_lock_wait_s=0.2)
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text=LONG_REPLY))
    gw.fake.slow_stream(0.05)  # ~3 s: five leases long
    with gw.client(key["secret"]) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        thread = new_thread(c)
        first = pool.submit(c.post, f"/v1/threads/{thread}/messages", json=TURN)
        wait_until(lambda: gw.fake.requests)
        time.sleep(1.5)
        second = c.post(f"/v1/threads/{thread}/messages", json={**TURN, "content": "me too"})
        assert first.result().status_code == 200
        messages = history(c, thread)
    assert second.status_code == 409  # the live holder was not taken over
    assert [m["role"] for m in messages] == ["user", "assistant"] and text_of(messages[1]) == LONG_REPLY


def test_a_dead_holders_lock_is_taken_over_and_its_turn_ended_cleanly(gateway_factory):
    """A turn whose process died (state as a kill -9 leaves it: the lock, the user message, the
    run in flight, the open reservation, the events it streamed): the next turn waits out the
    dead lease, ends that run, keeps what it had said, settles its call from what it streamed."""
    from threadgate.domain.models import NewMessage
    from threadgate.domain.runs import Run

    gw = gateway_factory(turn_lease_ms=500, turn_lock_wait_s=3)
    rt = gw.runtime
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text="fresh answer"))
    with gw.client(key["secret"]) as c:
        thread = new_thread(c)
    from threadgate.domain.keys import hash_secret, principal_of

    principal = principal_of(rt.stores.keys.find_by_hash(hash_secret(key["secret"])))
    model = rt.catalog.get(MODEL)
    now = rt.clock.now_ms()
    dead = "req_dead_turn"
    assert rt.stores.threads.acquire_turn_lock(thread, dead, now, 500)
    (user,) = rt.stores.threads.append_messages(principal.account_id, thread, [
        NewMessage("user", [{"type": "text", "text": "hello?"}], "user", request_id=dead)], now)
    rt.meter.reserve(principal, model, input_bound=100, max_tokens=200, request_id=dead,
                     reservation_id=f"{dead}:1", thread_id=thread)
    rt.stores.runs.create_run(Run(
        id=dead, account_id=principal.account_id, key_id=principal.key_id, scope=principal.scope,
        end_user_id=None, thread_id=thread, thread_end_user_id=None, model=MODEL, params={"max_tokens": 200},
        tools=[], max_iterations=8, created_at=now, updated_at=now, iteration=1, in_flight=1, call_from=1,
        user_seq=user.seq))
    streamed = [
        {"type": "message_start", "message": {"id": "msg_d", "type": "message", "role": "assistant", "content": [],
                                              "model": MODEL, "usage": {"input_tokens": 40, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half an "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "answer"}},
    ]
    rt.stores.runs.append_events(dead, 1, streamed)
    with gw.client(key["secret"]) as c:
        started = time.monotonic()
        r = c.post(f"/v1/threads/{thread}/messages", json=TURN)
        took = time.monotonic() - started
        messages = history(c, thread)
        dead_run = c.get(f"/v1/threads/{thread}/runs/{dead}").json()
        replay = numbered(parse_sse(c.get(f"/v1/threads/{thread}/runs/{dead}/events").content))
        own = c.get("/v1/key").json()
    assert r.status_code == 200, r.text
    assert took < 3, took  # the dead lease (0.5 s), not minutes
    assert [(m["role"], text_of(m)) for m in messages] == [
        ("user", "hello?"), ("assistant", "Half an answer"), ("user", TURN["content"]), ("assistant", "fresh answer")]
    assert dead_run["status"] == "failed" and "interrupted" in dead_run["error"]["message"]
    assert [e for _, e, _ in replay][-2:] == ["qlaud.error", "qlaud.done"]
    with gw.admin() as admin:
        u = admin.get(f"/v1/keys/{key['id']}/usage").json()
    (dead_event,) = [e for e in u["events"] if e["request_id"] == dead]
    assert dead_event["status"] == "incomplete" and dead_event["input_tokens"] == 40
    assert dead_event["output_tokens"] == 2  # one per delta seen
    assert own["reserved_micros"] == 0 and own["spent_micros"] == sum(e["cost_micros"] for e in u["events"])
