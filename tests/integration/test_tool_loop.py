"""The server-side tool loop over real HTTP (API.md §6.1, §6.2, §8; issue 3).

A gateway on 127.0.0.1 talks to the fake Anthropic upstream (scripted tool_use answers) and
delivers tool calls to a real webhook receiver (tests/fakes/webhook_receivers.py), which checks
every signature with the public helper. Retry backoff is shortened through settings; the policy
(4 attempts, which failures retry) is the production one.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.webhook_receivers import ERROR_PAGE, WebhookReceiver, running_webhook_receiver
from threadgate.webhooks import sign, verify_request

MODEL = "claude-haiku-4-5"
LIMIT_REACHED = "not executed: iteration limit reached"
SCHEMA = {"type": "object", "properties": {"account_id": {"type": "string"}}}


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    # No default secret: every delivery must verify with the secret of its own tool.
    with running_webhook_receiver(hang_s=10) as running:
        yield running


def register(gw, receiver: WebhookReceiver, name: str, path: str, *, timeout_ms: int = 5000) -> dict[str, Any]:
    with gw.admin() as admin:
        r = admin.post("/v1/tools", json={"name": name, "description": f"the {name} tool", "input_schema": SCHEMA,
                                           "webhook_url": receiver.url(path), "timeout_ms": timeout_ms})
    assert r.status_code == 201, r.text
    tool = r.json()
    receiver.secrets[tool["id"]] = tool["secret"]
    return tool


def new_thread(gw, key: dict[str, Any]) -> str:
    with gw.client(key["secret"]) as c:
        r = c.post("/v1/threads", json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def send(gw, key: dict[str, Any], thread_id: str, tools: list[dict[str, Any]], **body: Any):
    payload = {"model": MODEL, "max_tokens": 200, "content": "look it up", "tools": [t["id"] for t in tools]}
    payload.update(body)
    with gw.client(key["secret"]) as c:
        return c.post(f"/v1/threads/{thread_id}/messages", json=payload)


def history(gw, key: dict[str, Any], thread_id: str) -> list[dict[str, Any]]:
    with gw.client(key["secret"]) as c:
        r = c.get(f"/v1/threads/{thread_id}/messages", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def usage_of(gw, key: dict[str, Any]) -> dict[str, Any]:
    with gw.admin() as admin:
        return admin.get(f"/v1/keys/{key['id']}/usage").json()


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Decode the stream with the official SDK's SSE decoder."""
    from anthropic._streaming import SSEDecoder

    return [(e.event, e.json()) for e in SSEDecoder().iter_bytes(iter([raw])) if e.event]


def tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    assert message["role"] == "user"
    return [b for b in message["content"] if b["type"] == "tool_result"]


def block_types(message: dict[str, Any]) -> list[str]:
    content = message["content"]
    return ["text"] if isinstance(content, str) else [b["type"] for b in content]


def assert_valid_anthropic_history(messages: list[dict[str, Any]]) -> None:
    """What the Messages API requires of `messages`: user first, roles alternating, and every
    tool_use answered by a tool_result in the very next (user) message, results first."""
    assert messages and messages[0]["role"] == "user"
    for before, after in zip(messages, messages[1:]):
        assert before["role"] != after["role"], [m["role"] for m in messages]
    for i, m in enumerate(messages):
        blocks = m["content"] if isinstance(m["content"], list) else []
        uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
        if uses:
            assert m["role"] == "assistant" and i + 1 < len(messages), "a tool_use is the last message"
            answered = [b["tool_use_id"] for b in tool_results(messages[i + 1])]
            assert answered == uses
            kinds = block_types(messages[i + 1])
            assert kinds[: len(uses)] == ["tool_result"] * len(uses)
        if m["role"] == "user" and i > 0:
            prev = messages[i - 1]["content"]
            prev_uses = {b["id"] for b in prev if b["type"] == "tool_use"} if isinstance(prev, list) else set()
            assert {b["tool_use_id"] for b in tool_results(m)} <= prev_uses


# --- one tool ---------------------------------------------------------------------------------------


def test_single_tool_round_trip(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint(end_user_id="user_7")
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(
        FakeReply(text="Let me check.", tool_uses=[FakeToolUse("lookup_account", {"account_id": "acct_42"}, id="toolu_single")]),
        FakeReply(text="Your plan is pro."),
    )

    r = send(gw, key, thread_id, [tool], content="what plan is acct_42 on?")

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["content"] == [{"type": "text", "text": "Your plan is pro."}]
    assert body["stop_reason"] == "end_turn" and body["hit_max_iterations"] is False
    assert r.headers["x-qlaud-iterations"] == "2"
    assert r.headers["x-qlaud-thread-id"] == thread_id
    assert r.headers["x-qlaud-assistant-seq"] == "4"

    # The webhook got exactly the documented body, signed with the tool's secret.
    (delivery,) = receiver.deliveries_for("toolu_single")
    assert delivery.json == {
        "tool_id": tool["id"], "tool_use_id": "toolu_single", "name": "lookup_account",
        "input": {"account_id": "acct_42"}, "thread_id": thread_id, "end_user_id": "user_7",
        "request_id": r.headers["request-id"],
    }
    assert delivery.signature_valid is True and delivery.attempt == 1
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["user-agent"].startswith("threadgate/")
    assert verify_request(tool["secret"], delivery.body, delivery.headers)
    assert not verify_request(tool["secret"], delivery.body.replace(b"acct_42", b"acct_43"), delivery.headers)
    assert not verify_request("wsk_" + "0" * 64, delivery.body, delivery.headers)
    stale = int(delivery.headers["x-qlaud-timestamp"]) - 301
    old = {**delivery.headers, "x-qlaud-timestamp": str(stale), "x-qlaud-signature": sign(tool["secret"], stale, delivery.body)}
    assert not verify_request(tool["secret"], delivery.body, old)

    # The model was told about the tool, then got its result.
    first, second = (req.body for req in gw.fake.requests)
    assert first["tools"] == [{"name": "lookup_account", "description": "the lookup_account tool", "input_schema": SCHEMA}]
    assert second["tools"] == first["tools"]
    (result,) = tool_results(second["messages"][-1])
    assert result["tool_use_id"] == "toolu_single" and not result.get("is_error")
    assert json.loads(result["content"]) == {"account_id": "acct_42"}
    assert_valid_anthropic_history(second["messages"])

    # Every step is in the thread, seq dense.
    stored = history(gw, key, thread_id)
    assert [(m["seq"], m["role"]) for m in stored] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    assert block_types(stored[1]) == ["text", "tool_use"]
    assert stored[2]["content"] == second["messages"][-1]["content"]
    assert stored[3]["content"] == body["content"] and stored[3]["model"] == MODEL
    assert {m["request_id"] for m in stored} == {r.headers["request-id"]}

    # Billed per model call; the headers and the body sum both calls.
    usage = usage_of(gw, key)
    assert usage["request_count"] == 2 and len(usage["events"]) == 2
    assert int(r.headers["x-qlaud-cost-micros"]) == sum(e["cost_micros"] for e in usage["events"]) == usage["spent_micros"]
    assert body["usage"]["output_tokens"] == sum(e["output_tokens"] for e in usage["events"])
    assert body["usage"]["input_tokens"] == sum(e["input_tokens"] for e in usage["events"])


def test_tool_choice_is_forwarded_upstream(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    gw.fake.enqueue(FakeReply(text="ok"))
    choice = {"type": "tool", "name": "lookup_account"}
    r = send(gw, key, new_thread(gw, key), [tool], tool_choice=choice)
    assert r.status_code == 200, r.text
    assert gw.fake.requests[0].body["tool_choice"] == choice


def test_tool_ids_alias_names_the_tools(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {"account_id": "a"}, id="toolu_alias")]),
                    FakeReply(text="done"))
    r = send(gw, key, new_thread(gw, key), [], tool_ids=[tool["id"]])
    assert r.status_code == 200, r.text
    assert len(receiver.deliveries_for("toolu_alias")) == 1


# --- several tools ------------------------------------------------------------------------------------


def test_two_slow_tools_run_concurrently(gw, receiver):
    tools = [register(gw, receiver, "slow_a", "/slow/1"), register(gw, receiver, "slow_b", "/slow/1")]
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(
        FakeReply(tool_uses=[FakeToolUse("slow_a", {"n": 1}, id="toolu_pa"), FakeToolUse("slow_b", {"n": 2}, id="toolu_pb")]),
        FakeReply(text="both done"),
    )
    payload = {"model": MODEL, "max_tokens": 50, "content": "both", "tools": [t["id"] for t in tools], "stream": True}
    arrivals: list[tuple[str, float]] = []  # (event name, when the client read it)
    with gw.client(key["secret"]) as c, c.stream("POST", f"/v1/threads/{thread_id}/messages", json=payload) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                arrivals.append((line[7:], time.monotonic()))
    names = [n for n, _ in arrivals]
    assert names[-1] == "qlaud.done" and names.count("qlaud.tool_dispatch_done") == 2
    assert len(receiver.deliveries_for("toolu_pa")) == len(receiver.deliveries_for("toolu_pb")) == 1
    # Tool time as the client sees it: first dispatch start to last dispatch done. One after the
    # other, two 1 s tools take at least 2 s; together about 1 s (slack for a loaded machine).
    first_start = min(t for n, t in arrivals if n == "qlaud.tool_dispatch_start")
    last_done = max(t for n, t in arrivals if n == "qlaud.tool_dispatch_done")
    assert last_done - first_start < 1.9, f"two 1 s tools took {last_done - first_start:.2f} s: not concurrent"


def test_results_keep_the_models_order_not_the_finishing_order(gw, receiver):
    tools = [register(gw, receiver, "slowish", "/slow/0.4"), register(gw, receiver, "instant", "/echo")]
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(
        FakeReply(tool_uses=[FakeToolUse("slowish", {"i": 1}, id="toolu_o1"), FakeToolUse("instant", {"i": 2}, id="toolu_o2")]),
        FakeReply(text="ordered"),
    )
    r = send(gw, key, thread_id, tools, stream=True)
    events = sse(r.content)
    done = [e["tool_use_id"] for name, e in events if name == "qlaud.tool_dispatch_done"]
    # The instant tool finished first, but results are reported, sent and stored in the model's
    # order (the stream is the same whichever driver delivered them: issue 8's driver equivalence).
    assert done == ["toolu_o1", "toolu_o2"]
    sent = gw.fake.requests[1].body["messages"][-1]
    assert [b["tool_use_id"] for b in tool_results(sent)] == ["toolu_o1", "toolu_o2"]
    assert [json.loads(b["content"]) for b in tool_results(sent)] == [{"i": 1}, {"i": 2}]
    assert [b["tool_use_id"] for b in tool_results(history(gw, key, thread_id)[2])] == ["toolu_o1", "toolu_o2"]


# --- delivery failures the model must see ---------------------------------------------------------------


def run_one(gw, receiver, path: str, *, timeout_ms: int = 5000, tool_use_id: str) -> dict[str, Any]:
    """A one-tool turn against `path`; returns the tool_result block the model got."""
    tool = register(gw, receiver, "lookup_account", path, timeout_ms=timeout_ms)
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {"account_id": "x"}, id=tool_use_id)]),
                    FakeReply(text="noted"))
    r = send(gw, key, thread_id, [tool])
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "noted"}]
    (result,) = tool_results(gw.fake.requests[1].body["messages"][-1])
    assert result["tool_use_id"] == tool_use_id
    assert tool_results(history(gw, key, thread_id)[2]) == [result]  # what the model saw is what is stored
    return result


def test_tool_failing_twice_with_503_is_delivered_three_times(gw, receiver):
    result = run_one(gw, receiver, "/flaky/2", tool_use_id="toolu_flaky")
    deliveries = receiver.deliveries_for("toolu_flaky")
    assert [d.attempt for d in deliveries] == [1, 2, 3]
    assert {d.delivery_id for d in deliveries} == {"toolu_flaky"}
    assert len({d.body for d in deliveries}) == 1 and all(d.signature_valid for d in deliveries)
    assert not result.get("is_error") and json.loads(result["content"]) == {"account_id": "x"}


def test_tool_always_500_is_tried_four_times_and_the_model_sees_is_error(gw, receiver):
    result = run_one(gw, receiver, "/status/500", tool_use_id="toolu_500")
    assert [d.attempt for d in receiver.deliveries_for("toolu_500")] == [1, 2, 3, 4]
    assert result["is_error"] is True and "500" in result["content"]
    assert "hunter2" not in result["content"] and ERROR_PAGE not in result["content"]


def test_tool_answering_400_is_not_retried(gw, receiver):
    result = run_one(gw, receiver, "/status/400", tool_use_id="toolu_400")
    assert len(receiver.deliveries_for("toolu_400")) == 1
    assert result["is_error"] is True and "400" in result["content"] and "hunter2" not in result["content"]


def test_tool_timing_out_is_an_error_for_the_model(gw, receiver):
    result = run_one(gw, receiver, "/hang", timeout_ms=1000, tool_use_id="toolu_hang")
    assert [d.attempt for d in receiver.deliveries_for("toolu_hang")] == [1, 2, 3, 4]
    assert result["is_error"] is True and "timeout" in result["content"]


def test_non_json_answer_is_text_output(gw, receiver):
    result = run_one(gw, receiver, "/text", tool_use_id="toolu_text")
    assert result["content"] == "plain text answer" and not result.get("is_error")


def test_tool_reported_error_reaches_the_model(gw, receiver):
    result = run_one(gw, receiver, "/tool-error", tool_use_id="toolu_terr")
    assert result == {"type": "tool_result", "tool_use_id": "toolu_terr", "is_error": True,
                      "content": "lookup failed: no such account"}


def test_two_mib_answer_is_cut_to_an_error(gw, receiver):
    result = run_one(gw, receiver, "/big", tool_use_id="toolu_big")
    assert len(receiver.deliveries_for("toolu_big")) == 1
    assert result["is_error"] is True and "too large" in result["content"] and len(result["content"]) < 200


def test_delivery_is_refused_for_a_stored_private_url_when_not_allowed(gateway_factory, receiver):
    """A tool whose URL the deployment does not allow (registered under another policy) is never
    called: the address guard runs again at delivery."""
    from threadgate.domain.models import Tool

    gw = gateway_factory()  # test mode: private webhooks not allowed
    rt = gw.runtime
    account_id = rt.stores.keys.first_account().id
    tool = Tool(id="tool_" + "1" * 32, account_id=account_id, name="lookup_account", description="d",
                input_schema=SCHEMA, webhook_url=receiver.url("/echo"), timeout_ms=2000,
                secret="wsk_" + "2" * 64, created_at=rt.clock.now_ms())
    rt.stores.tools.create_tool(tool)
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id="toolu_refused")]), FakeReply(text="ok"))
    r = send(gw, key, thread_id, [{"id": tool.id}])
    assert r.status_code == 200, r.text
    assert receiver.deliveries == []
    (result,) = tool_results(gw.fake.requests[1].body["messages"][-1])
    assert result["is_error"] is True and "refused" in result["content"]


# --- the iteration limit ------------------------------------------------------------------------------


def test_model_that_keeps_asking_stops_at_max_iterations_and_thread_stays_valid(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(*[
        FakeReply(text=f"try {i}", tool_uses=[FakeToolUse("lookup_account", {"i": i}, id=f"toolu_again{i}")])
        for i in (1, 2, 3)
    ])

    r = send(gw, key, thread_id, [tool], max_iterations=3, stream=True)

    events = sse(r.content)
    assert events[-1][0] == "qlaud.done"
    done = events[-1][1]
    assert done["iterations"] == 3 and done["hit_max_iterations"] is True and done["incomplete"] is False
    assert len(gw.fake.requests) == 3
    # The first two calls ran; the third was answered in the thread without being called.
    assert len(receiver.deliveries_for("toolu_again1")) == len(receiver.deliveries_for("toolu_again2")) == 1
    assert receiver.deliveries_for("toolu_again3") == []
    assert [e["tool_use_id"] for n, e in events if n == "qlaud.tool_dispatch_start"] == ["toolu_again1", "toolu_again2"]
    stored = history(gw, key, thread_id)
    assert [m["seq"] for m in stored] == list(range(1, 8))
    assert [m["role"] for m in stored] == ["user", "assistant"] * 3 + ["user"]
    assert tool_results(stored[-1]) == [
        {"type": "tool_result", "tool_use_id": "toolu_again3", "content": LIMIT_REACHED, "is_error": True}
    ]
    assert done["seq"] == 6  # the last assistant message

    # The same limit, non-streaming: the body says so.
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id="toolu_once")]))
    r1 = send(gw, key, new_thread(gw, key), [tool], max_iterations=1)
    assert r1.status_code == 200 and r1.json()["hit_max_iterations"] is True
    assert r1.headers["x-qlaud-iterations"] == "1" and receiver.deliveries_for("toolu_once") == []

    # A next turn on the first thread: the history the model receives is valid.
    gw.fake.enqueue(FakeReply(text="fine"))
    r2 = send(gw, key, thread_id, [tool], content="ok, stop")
    assert r2.status_code == 200, r2.text
    sent = gw.fake.requests[-1].body["messages"]
    assert_valid_anthropic_history(sent)
    assert sent[-1]["content"][-1] == {"type": "text", "text": "ok, stop"}
    assert len([m for m in sent if m["role"] == "assistant"]) == 3


# --- caps -------------------------------------------------------------------------------------------


def _cap_scenario(gw, receiver, *, stream: bool):
    """A key whose cap affords the first model call but not the second: the tool's input (echoed
    back as its result) makes the second call's input bound far larger than the first's."""
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint(max_spend_usd=0.05)  # 50 000 µ$: call 1 reserves < 3 000, call 2 needs > 100 000
    thread_id = new_thread(gw, key)
    big = {"blob": "x" * 40_000}
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", big, id="toolu_capped")]), FakeReply(text="never"))
    r = send(gw, key, thread_id, [tool], max_tokens=10, stream=stream)
    return tool, key, thread_id, r


def _check_cap_aftermath(gw, receiver, tool, key, thread_id) -> None:
    assert len(gw.fake.requests) == 1  # the second call was never made
    assert len(receiver.deliveries_for("toolu_capped")) == 1  # the tools of the first call did run
    usage = usage_of(gw, key)
    assert usage["request_count"] == 1
    (event,) = usage["events"]
    assert usage["spent_micros"] == event["cost_micros"] > 0
    with gw.client(key["secret"]) as c:
        own = c.get("/v1/key").json()
    assert own["reserved_micros"] == 0 and own["spent_micros"] == event["cost_micros"]  # nothing left reserved
    stored = history(gw, key, thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "user"]
    # The thread stays valid: a key with budget continues it.
    gw.fake.enqueue(FakeReply(text="continued"))
    with gw.admin() as admin:
        r = admin.post(f"/v1/threads/{thread_id}/messages",
                       json={"model": MODEL, "max_tokens": 20, "content": "go on", "tools": [tool["id"]]})
    assert r.status_code == 200, r.text
    assert_valid_anthropic_history(gw.fake.requests[-1].body["messages"])


def test_cap_running_out_mid_loop_streaming(gw, receiver):
    tool, key, thread_id, r = _cap_scenario(gw, receiver, stream=True)
    assert r.status_code == 200
    events = sse(r.content)
    names = [n for n, _ in events]
    assert names[-1] == "qlaud.done" and "qlaud.error" in names
    error = dict(events)["qlaud.error"]
    assert error["error"]["type"] == "key_cap_exceeded" and error["iteration"] == 2
    assert names.index("qlaud.tool_dispatch_done") < names.index("qlaud.error")
    assert "qlaud.iteration_start" not in names  # no second call began
    done = events[-1][1]
    assert done["incomplete"] is True and done["iterations"] == 1
    assert done["cost_micros"] == usage_of(gw, key)["spent_micros"]
    _check_cap_aftermath(gw, receiver, tool, key, thread_id)


def test_cap_running_out_mid_loop_non_streaming(gw, receiver):
    tool, key, thread_id, r = _cap_scenario(gw, receiver, stream=False)
    assert r.status_code == 402, r.text
    assert r.json()["error"]["type"] == "key_cap_exceeded"
    assert r.headers["x-qlaud-thread-id"] == thread_id
    assert int(r.headers["x-qlaud-cost-micros"]) == usage_of(gw, key)["spent_micros"]
    _check_cap_aftermath(gw, receiver, tool, key, thread_id)


# --- streaming --------------------------------------------------------------------------------------


def test_two_iteration_stream_order_and_official_sdk_parsing(gw, receiver):
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(
        FakeReply(text="Checking.", tool_uses=[FakeToolUse("lookup_account", {"account_id": "acct_42"}, id="toolu_s1")]),
        FakeReply(text="It is pro."),
    )
    r = send(gw, key, thread_id, [tool], stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.content)
    names = [n for n, _ in events]
    for name, data in events:
        assert data["type"] == name

    # Shape: bracket 1, the dispatch, iteration 2's marker, bracket 2, done last.
    starts = [i for i, n in enumerate(names) if n == "message_start"]
    stops = [i for i, n in enumerate(names) if n == "message_stop"]
    assert len(starts) == len(stops) == 2
    dispatch_start, dispatch_done = names.index("qlaud.tool_dispatch_start"), names.index("qlaud.tool_dispatch_done")
    iteration = names.index("qlaud.iteration_start")
    assert starts[0] < stops[0] < dispatch_start < dispatch_done < iteration < starts[1] < stops[1] < len(names) - 1
    assert names[-1] == "qlaud.done" and names.count("qlaud.done") == 1
    assert events[dispatch_start][1] == {"type": "qlaud.tool_dispatch_start", "tool_use_id": "toolu_s1",
                                         "name": "lookup_account", "iteration": 1}
    assert events[dispatch_done][1] == {"type": "qlaud.tool_dispatch_done", "tool_use_id": "toolu_s1",
                                        "name": "lookup_account", "iteration": 1, "is_error": False,
                                        "output": json.dumps({"account_id": "acct_42"})}
    assert events[iteration][1] == {"type": "qlaud.iteration_start", "iteration": 2}
    assert not [n for n in names if n.startswith("qlaud.") and n not in (
        "qlaud.tool_dispatch_start", "qlaud.tool_dispatch_done", "qlaud.iteration_start", "qlaud.done")]

    # Each bracket is a well-formed Anthropic stream: the SDK's own types and accumulator read it.
    adapter = TypeAdapter(RawMessageStreamEvent)
    messages = []
    for lo, hi in zip(starts, stops):
        snapshot, bufs = None, {}
        for name, data in events[lo : hi + 1]:
            if name == "ping":
                continue
            snapshot = accumulate_event(event=adapter.validate_python(data), current_snapshot=snapshot, json_bufs=bufs)
        messages.append(snapshot)
    first, second = messages
    assert first.model == second.model == MODEL
    assert first.stop_reason == "tool_use" and second.stop_reason == "end_turn"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    assert first.content[1].id == "toolu_s1" and first.content[1].input == {"account_id": "acct_42"}
    assert second.content[0].text == "It is pro."
    assert [n for n in names[starts[1]:stops[1]] if n == "content_block_start"]  # indexes restart per bracket
    assert events[starts[1] + 1][1].get("index", 0) == 0

    done = events[-1][1]
    stored = history(gw, key, thread_id)
    assert done == {
        "type": "qlaud.done", "thread_id": thread_id, "seq": 4, "iterations": 2, "hit_max_iterations": False,
        "incomplete": False, "cost_micros": usage_of(gw, key)["spent_micros"], "usage": done["usage"],
    }
    assert done["usage"]["output_tokens"] == first.usage.output_tokens + second.usage.output_tokens
    assert stored[1]["content"] == [b.model_dump(exclude_none=True) for b in first.content]
    assert stored[3]["content"] == [{"type": "text", "text": "It is pro."}]


# --- offline model ------------------------------------------------------------------------------------


def test_offline_local_model_runs_the_loop_against_a_local_receiver(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    r = send(gw, key, thread_id, [tool], model="threadgate-local",
             content='Please lookup_account {"account_id": "acct_42"}')
    assert r.status_code == 200, r.text
    assert r.headers["x-qlaud-iterations"] == "2"
    text = r.json()["content"][0]["text"]
    assert text.startswith("Tool results:") and "acct_42" in text
    (delivery,) = [d for d in receiver.deliveries if d.signature_valid]
    assert delivery.json["input"] == {"account_id": "acct_42"}
    stored = history(gw, key, thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert gw.fake.requests == []  # no provider involved


# --- the loop outlives its client, and other edges ----------------------------------------------------


def wait_for(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_client_leaving_mid_loop_does_not_stop_the_turn(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/slow/0.5")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {"a": 1}, id="toolu_gone")]),
                    FakeReply(text="finished without you"))
    payload = {"model": MODEL, "max_tokens": 50, "content": "go", "tools": [tool["id"]], "stream": True}
    with gw.client(key["secret"]) as c, c.stream("POST", f"/v1/threads/{thread_id}/messages", json=payload) as r:
        for line in r.iter_lines():
            if line == "event: qlaud.tool_dispatch_start":
                break  # hang up while the tool runs
    wait_for(lambda: len(history(gw, key, thread_id)) == 4)
    stored = history(gw, key, thread_id)
    assert stored[3]["content"] == [{"type": "text", "text": "finished without you"}]
    assert len(receiver.deliveries_for("toolu_gone")) == 1
    wait_for(lambda: usage_of(gw, key)["request_count"] == 2)


def test_model_asking_for_a_tool_not_given_to_the_turn_gets_an_error_result(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("delete_everything", {}, id="toolu_nope"),
                                         FakeToolUse("lookup_account", {"ok": 1}, id="toolu_fine")]),
                    FakeReply(text="ok"))
    r = send(gw, key, new_thread(gw, key), [tool])
    assert r.status_code == 200, r.text
    nope, fine = tool_results(gw.fake.requests[1].body["messages"][-1])
    assert nope["tool_use_id"] == "toolu_nope" and nope["is_error"] is True and "delete_everything" in nope["content"]
    assert fine["tool_use_id"] == "toolu_fine" and not fine.get("is_error")
    assert [d.delivery_id for d in receiver.deliveries] == ["toolu_fine"]


def test_idempotent_retry_replays_without_calling_tools_again(gw, receiver):
    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id="toolu_idem")]), FakeReply(text="once"))
    payload = {"model": MODEL, "max_tokens": 50, "content": "go", "tools": [tool["id"]]}
    with gw.client(key["secret"]) as c:
        first = c.post(f"/v1/threads/{thread_id}/messages", json=payload, headers={"Idempotency-Key": "turn-1"})
        again = c.post(f"/v1/threads/{thread_id}/messages", json=payload, headers={"Idempotency-Key": "turn-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["x-qlaud-iterations"] == "2"
    assert len(receiver.deliveries_for("toolu_idem")) == 1 and len(gw.fake.requests) == 2
    assert len(history(gw, key, thread_id)) == 4


def test_upstream_failing_on_the_second_call(gw, receiver):
    """Non-streaming: the failure's status with the turn's headers; streaming: qlaud.error. Either
    way the first call is billed, the tool ran once, and the thread takes a next turn."""
    import concurrent.futures

    tool = register(gw, receiver, "lookup_account", "/slow/1")  # the window to script the next call's fault
    key = gw.mint()
    for stream in (False, True):
        thread_id = new_thread(gw, key)
        gw.fake.reset()
        gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id=f"toolu_up{stream}")]))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(send, gw, key, thread_id, [tool], stream=stream)
            wait_for(lambda: len(gw.fake.requests) == 1)
            gw.fake.fail_next(status=400, message="messages: bad request")  # for the call after the tool
            r = pending.result()
        if stream:
            events = sse(r.content)
            assert r.status_code == 200 and events[-1][0] == "qlaud.done" and events[-1][1]["incomplete"] is True
            error = dict(events)["qlaud.error"]
            assert error["iteration"] == 2 and error["error"]["type"] == "invalid_request_error"
        else:
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
            assert r.headers["x-qlaud-thread-id"] == thread_id and r.headers["x-qlaud-iterations"] == "2"
        assert len(receiver.deliveries_for(f"toolu_up{stream}")) == 1
        assert [m["role"] for m in history(gw, key, thread_id)] == ["user", "assistant", "user"]
        gw.fake.enqueue(FakeReply(text="recovered"))
        assert send(gw, key, thread_id, [tool], content="again").status_code == 200
        assert_valid_anthropic_history(gw.fake.requests[-1].body["messages"])
    events_by_status = sorted(e["status"] for e in usage_of(gw, key)["events"])
    assert events_by_status == ["ok"] * 4  # two first calls and two recoveries; the refused calls cost nothing


def test_pings_keep_the_stream_alive_while_a_tool_runs(gateway_factory, receiver):
    gw = gateway_factory(allow_private_webhooks=True, ping_interval_s=0.2)
    tool = register(gw, receiver, "lookup_account", "/slow/1")
    key = gw.mint()
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id="toolu_ping")]), FakeReply(text="ok"))
    names = [n for n, _ in sse(send(gw, key, new_thread(gw, key), [tool], stream=True).content)]
    between = names[names.index("qlaud.tool_dispatch_start") : names.index("qlaud.tool_dispatch_done")]
    assert "ping" in between


def test_tool_loop_on_dynamodb_with_kms_sealed_secrets(gateway_factory, receiver):
    """The AWS-shaped stores: the secret returned once at registration is stored KMS-sealed, never
    in clear, and still signs every delivery."""
    from tests.conftest_dynamo import TABLE_NAMES, dynamodb_stores

    with dynamodb_stores(kms=True) as dynamo:
        gw = gateway_factory(stores=dynamo.stores, allow_private_webhooks=True, webhook_backoff_base_s=0.01)
        tool = register(gw, receiver, "lookup_account", "/echo")
        items = dynamo.client.scan(TableName=TABLE_NAMES["tools_table"])["Items"]
        assert items and tool["secret"] not in json.dumps(items, default=str)
        key = gw.mint(end_user_id="u_dyn")
        thread_id = new_thread(gw, key)
        gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {"x": 1}, id="toolu_dyn")]),
                        FakeReply(text="done"))
        r = send(gw, key, thread_id, [tool])
        assert r.status_code == 200, r.text
        (delivery,) = receiver.deliveries_for("toolu_dyn")
        assert delivery.signature_valid is True
        assert delivery.json["end_user_id"] == "u_dyn" and delivery.json["thread_id"] == thread_id
        assert [m["seq"] for m in history(gw, key, thread_id)] == [1, 2, 3, 4]


def test_tool_deleted_mid_turn_is_not_called(gw, receiver):
    """The turn checked the tool when it began; deleting it before the model asks for it means no
    delivery at all (its secret is gone: nothing the receiver could verify is ever sent)."""
    import concurrent.futures

    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.delay_headers(1.5)  # the first model call takes a while: the admin deletes the tool meanwhile
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id="toolu_deleted")]), FakeReply(text="ok"))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(send, gw, key, thread_id, [tool])
        wait_for(lambda: len(gw.fake.requests) == 1)
        with gw.admin() as admin:
            assert admin.delete(f"/v1/tools/{tool['id']}").status_code == 200
        r = pending.result()
    assert r.status_code == 200, r.text
    assert receiver.deliveries == []
    (result,) = tool_results(gw.fake.requests[1].body["messages"][-1])
    assert result["is_error"] is True and "unavailable" in result["content"]


def test_thread_deleted_mid_loop_ends_the_turn_and_holds_no_budget(gw, receiver):
    """Turn A is running its tool when the thread is deleted; turn B waited for A's thread lock.
    A ends with not_found (its first call billed), B gets 404, and nothing stays reserved."""
    import concurrent.futures

    tool = register(gw, receiver, "lookup_account", "/slow/2")  # A's tool runs while B queues and the thread goes
    key = gw.mint(max_spend_usd=1)
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id="toolu_a")]), FakeReply(text="never"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(send, gw, key, thread_id, [tool])
        wait_for(lambda: len(receiver.deliveries_for("toolu_a")) == 1)
        b = pool.submit(send, gw, key, thread_id, [tool], content="second")
        time.sleep(0.4)  # B is waiting for the thread lock
        with gw.client(key["secret"]) as c:
            assert c.delete(f"/v1/threads/{thread_id}").status_code == 200
        ra, rb = a.result(), b.result()
    assert ra.status_code == 404 and ra.json()["error"]["type"] == "not_found_error", ra.text
    assert rb.status_code == 404 and rb.json()["error"]["type"] == "not_found_error", rb.text
    assert len(gw.fake.requests) == 1  # neither A's second call nor B's call was made
    with gw.client(key["secret"]) as c:
        own = c.get("/v1/key").json()
        assert c.get(f"/v1/threads/{thread_id}/messages").status_code == 404
        found = c.get("/v1/search", params={"q": "look it up second"})
    assert own["reserved_micros"] == 0
    (event,) = usage_of(gw, key)["events"]
    assert own["spent_micros"] == event["cost_micros"] > 0
    if found.status_code == 200:  # search may be absent from this bundle
        assert all(hit["thread_id"] != thread_id for hit in found.json()["data"])


def test_store_failure_mid_loop_is_an_error_not_a_silent_200(gw, receiver):
    """A store outage while the tool results are written (say DynamoDB throttling): the client
    learns it (500 / qlaud.error + qlaud.done), without details, and what ran is billed."""
    import sqlite3

    tool = register(gw, receiver, "lookup_account", "/echo")
    key = gw.mint()
    threads = gw.runtime.stores.threads
    real_append = threads.append_messages

    def flaky_append(account_id, thread_id, messages, now_ms):
        if messages and messages[0].kind == "tool_result":
            raise sqlite3.OperationalError("database is locked: /secret/path/threadgate.db")
        return real_append(account_id, thread_id, messages, now_ms)

    threads.append_messages = flaky_append
    try:
        for stream in (False, True):
            gw.fake.reset()  # drops the reply the failed turn never asked for
            gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup_account", {}, id=f"toolu_store{stream}")]),
                            FakeReply(text="never"))
            r = send(gw, key, new_thread(gw, key), [tool], stream=stream)
            if stream:
                events = sse(r.content)
                assert [n for n, _ in events][-2:] == ["qlaud.error", "qlaud.done"]
                assert events[-2][1]["error"]["type"] == "api_error" and events[-1][1]["incomplete"] is True
            else:
                assert r.status_code == 500 and r.json()["error"]["type"] == "api_error", r.text
            assert "secret" not in r.text and "database" not in r.text
    finally:
        threads.append_messages = real_append
    with gw.client(key["secret"]) as c:
        assert c.get("/v1/key").json()["reserved_micros"] == 0
    assert usage_of(gw, key)["request_count"] == 2  # one call per turn, each settled
