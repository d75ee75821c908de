"""Per-model parameter rules (issue 14): what a model refuses gets a 400 naming the parameter
before any upstream call and without a charge, on thread turns and on passthrough; a thread that
alternates a legacy and a current model with tools stays valid for both; and the context window
is enforced on passthrough (issue 11 item 11)."""

from __future__ import annotations

import pytest

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.webhook_receivers import running_webhook_receiver

REFUSED = [
    ("claude-sonnet-5", {"temperature": 0.5}, "temperature"),
    ("claude-sonnet-5", {"top_p": 0.9}, "top_p"),
    ("claude-sonnet-5", {"top_k": 5}, "top_k"),
    ("claude-sonnet-5", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
    ("claude-sonnet-5-5", {"temperature": 0}, "temperature"),
    ("claude-sonnet-5-5", {"top_p": 0.5}, "top_p"),
    ("claude-sonnet-5-5", {"top_k": 40}, "top_k"),
    ("claude-sonnet-5-5", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ("claude-sonnet-5-5", {"tool_choice": {"type": "any"}}, "tool_choice"),
    ("claude-sonnet-5-5", {"tool_choice": {"type": "tool", "name": "lookup"}}, "tool_choice"),
    ("claude-opus-5-5", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
]
TOOL = {"name": "lookup", "description": "look it up", "input_schema": {"type": "object"}}


def _no_trace(gw, key, sent_before: int) -> None:
    assert len(gw.fake.requests) == sent_before  # nothing reached the upstream
    with gw.client(key["secret"]) as c:
        k = c.get("/v1/key").json()
    assert (k["spent_micros"], k["reserved_micros"]) == (0, 0)


@pytest.mark.parametrize("model,params,name", REFUSED)
def test_a_refused_parameter_is_a_400_naming_it_on_a_thread_turn(gateway, model, params, name):
    key = gateway.mint()
    sent = len(gateway.fake.requests)
    with gateway.client(key["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        r = c.post(f"/v1/threads/{t['id']}/messages", json={"model": model, "max_tokens": 50, "content": "hi", **params})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == name if "param" in r.json()["error"] else name in r.json()["error"]["message"]
        assert r.json()["error"]["message"].startswith(f"{name}: ")
        assert c.get(f"/v1/threads/{t['id']}/messages").json()["data"] == []  # nothing persisted
    _no_trace(gateway, key, sent)


@pytest.mark.parametrize("model,params,name", REFUSED)
def test_a_refused_parameter_is_a_400_naming_it_on_passthrough(gateway, model, params, name):
    key = gateway.mint()
    sent = len(gateway.fake.requests)
    body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **params}
    if "tool_choice" in params:
        body["tools"] = [TOOL]
    with gateway.client(key["secret"]) as c:
        r = c.post("/v1/messages", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(f"{name}: ")
    _no_trace(gateway, key, sent)


def test_forced_tool_choice_through_chat_completions_is_refused_for_sonnet_5_5(gateway):
    key = gateway.mint()
    sent = len(gateway.fake.requests)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with gateway.client(key["secret"]) as c:
        r = c.post("/v1/chat/completions", json={"model": "claude-sonnet-5-5", "max_tokens": 50, "tools": tools,
                                                 "tool_choice": "required", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("tool_choice: ")
    _no_trace(gateway, key, sent)


@pytest.mark.parametrize("model,params", [
    ("claude-sonnet-5", {"temperature": 1}),                       # the default, sent explicitly
    ("claude-sonnet-5", {"tool_choice": {"type": "any"}}),          # forced tools are fine on Sonnet 5
    ("claude-sonnet-5-5", {"thinking": {"type": "adaptive"}}),
    ("claude-sonnet-4-6", {"temperature": 0.2, "top_k": 3, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
])
def test_what_a_model_accepts_goes_upstream(gateway, model, params):
    body = {"model": model, "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}], **params}
    if "tool_choice" in params:
        body["tools"] = [TOOL]
    with gateway.client(gateway.mint()["secret"]) as c:
        r = c.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert {k: gateway.fake.requests[-1].body.get(k) for k in params} == params


def test_a_thread_alternating_a_legacy_and_a_current_model_with_tools_stays_valid(gateway_factory):
    """Sonnet 5.5 says its between-tools text as signed thinking; Sonnet 4.6 does not think. The
    fake refuses any history the real API would (unanswered tool_use, unsigned thinking)."""
    with running_webhook_receiver() as receiver:
        gw = gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)
        with gw.admin() as admin:
            tool = admin.post("/v1/tools", json={**TOOL, "webhook_url": receiver.url("/echo")}).json()
        receiver.secrets[tool["id"]] = tool["secret"]
        key = gw.mint()
        models = ["claude-sonnet-4-6", "claude-sonnet-5-5", "claude-sonnet-4-6", "claude-sonnet-5-5"]
        with gw.client(key["secret"]) as c:
            thread = c.post("/v1/threads", json={}).json()["id"]
            for n, model in enumerate(models):
                gw.fake.enqueue(FakeReply(text=f"Let me look {n}.", tool_uses=[FakeToolUse("lookup", {"n": n})]),
                                FakeReply(text=f"Found {n}."))
                r = c.post(f"/v1/threads/{thread}/messages", json={"model": model, "max_tokens": 300, "stream": n % 2 == 1,
                                                                   "content": f"look up {n}", "tools": [tool["id"]]})
                assert r.status_code == 200, (model, r.text)
                assert "qlaud.error" not in r.text
            history = c.get(f"/v1/threads/{thread}/messages", params={"limit": 100}).json()["data"]
    sent = [req.body for req in gw.fake.requests if req.path.endswith("/v1/messages")]
    assert [b["model"] for b in sent] == [m for m in models for _ in (0, 1)]
    thinking = [b for m in history for b in (m["content"] if isinstance(m["content"], list) else [])
                if b["type"] == "thinking"]
    assert len(thinking) == 2 and all(b["signature"] for b in thinking)  # stored signed, from the stream too


def test_a_stream_cut_inside_a_thinking_block_leaves_the_thread_valid(gateway):
    key = gateway.mint()
    gateway.fake.enqueue(FakeReply(text="Let me look.", tool_uses=[FakeToolUse("lookup", {})]))
    gateway.fake.error_event_after(3)  # message_start, the thinking block's start, one delta: no signature yet
    with gateway.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
        r = c.post(f"/v1/threads/{thread}/messages", json={"model": "claude-sonnet-5-5", "max_tokens": 300,
                                                          "stream": True, "content": "look it up"})
        assert "qlaud.error" in r.text
        gateway.fake.enqueue(FakeReply(text="Fine now."))
        r = c.post(f"/v1/threads/{thread}/messages", json={"model": "claude-sonnet-5-5", "max_tokens": 300, "content": "again?"})
        assert r.status_code == 200, r.text
    sent = gateway.fake.requests[-1].body["messages"]
    assert not any(b.get("type") == "thinking" for m in sent for b in (m["content"] if isinstance(m["content"], list) else []))


def test_passthrough_enforces_the_context_window(gateway):
    """Issue 11 item 11: the offline model has a 32,768-token context."""
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        r = c.post("/v1/messages", json={"model": "threadgate-local", "max_tokens": 100,
                                         "messages": [{"role": "user", "content": "word " * 40_000}]})
        assert r.status_code == 400, r.text
        assert "context window of 32768" in r.json()["error"]["message"]
        r = c.post("/v1/messages", json={"model": "threadgate-local", "max_tokens": 5_000,
                                         "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("max_tokens: ")
        ok = c.post("/v1/messages", json={"model": "threadgate-local", "max_tokens": 100,
                                          "messages": [{"role": "user", "content": "word " * 20_000}]})
        assert ok.status_code == 200, ok.text
        assert c.get("/v1/key").json()["spent_micros"] == int(ok.headers["x-qlaud-cost-micros"])
