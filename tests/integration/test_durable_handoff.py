"""The seam with a durable driver (issue 8): after a model call asks for tools, the request hands
the run to a `ToolLoop` and relays its events from the RunStore. Here the durable driver is a
thread that does what the Step Functions execution does — each step in a FRESH context (nothing
shared with the request's process but the stores): deliver each call and record its outcome
(the webhook worker), `tools_done`, `model_step`, until the run ends. The client sees the same
§6.2 stream as the in-process loop, the thread and the billing are the same, and a dropped
stream resumes from the store."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.webhook_receivers import running_webhook_receiver
from tests.integration.test_runs import numbered, parse_sse, text_of

MODEL = "claude-haiku-4-5"


class ThreadedToolLoop:
    """Stands in for Step Functions: starts an 'execution' per run, once."""

    def __init__(self, rt: Any):
        self.rt = rt
        self.started: list[str] = []
        self.threads: list[threading.Thread] = []

    def start(self, run_id: str, tool_calls: list[dict[str, str]]) -> None:
        if run_id in self.started:
            return  # the execution is named after the run: a repeated start is a no-op
        self.started.append(run_id)
        thread = threading.Thread(target=asyncio.run, args=(self._execute(run_id, tool_calls),), daemon=True)
        self.threads.append(thread)
        thread.start()

    async def _execute(self, run_id: str, tool_calls: list[dict[str, str]]) -> None:
        from threadgate.domain.runs import ToolOutcome
        from threadgate.domain.steps import model_step, tool_call, tools_done
        from threadgate.runtime import build

        rt = build(self.rt.settings)  # another "process": its own clients; only the stores are shared
        rt.stores.close()
        rt.stores = self.rt.stores
        try:
            while tool_calls:
                for ref in tool_calls:  # the Map: one webhook-worker delivery per call
                    pending = tool_call(rt.run_deps(), ref["run_id"], ref["tool_use_id"])
                    result = await rt.dispatch_call(pending.account_id, pending.tool_id, pending.call, pending.context)
                    rt.stores.runs.put_tool_outcome(run_id, ref["tool_use_id"], ToolOutcome(
                        result.output_text, result.is_error, attempts=result.attempts, status_code=result.status))
                await tools_done(rt.run_deps(), run_id, [])  # a fresh context, as a Lambda has
                await tools_done(rt.run_deps(), run_id, [])  # retried by the state machine: no second append
                step = await model_step(rt.run_deps(), run_id)
                tool_calls = step["tool_calls"] if step["next"] == "tools" else []
        finally:
            rt.stores = type(rt.stores)(**{**vars(rt.stores), "close": lambda: None})  # shared: not ours to close
            await rt.aclose()


@pytest.fixture
def durable(gateway_factory):
    gw = gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)
    loop = ThreadedToolLoop(gw.runtime)
    gw.runtime.tool_loop = loop
    with running_webhook_receiver() as receiver:
        yield gw, loop, receiver
    for thread in loop.threads:
        thread.join(10)


def register(gw, receiver, path: str) -> dict[str, Any]:
    with gw.admin() as admin:
        tool = admin.post("/v1/tools", json={
            "name": "lookup", "description": "looks things up", "input_schema": {"type": "object"},
            "webhook_url": receiver.url(path), "timeout_ms": 5000}).json()
    receiver.secrets[tool["id"]] = tool["secret"]
    return tool


def test_a_tool_turn_handed_to_the_durable_driver_streams_as_the_inline_loop_does(durable):
    gw, loop, receiver = durable
    tool = register(gw, receiver, "/echo")
    key = gw.mint()
    gw.fake.enqueue(
        FakeReply(tool_uses=[FakeToolUse("lookup", {"q": 1}, id="toolu_d1"), FakeToolUse("lookup", {"q": 2}, id="toolu_d2")]),
        FakeReply(text="all done"),
    )
    with gw.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
        r = c.post(f"/v1/threads/{thread}/messages",
                   json={"model": MODEL, "max_tokens": 100, "content": "look it up", "tools": [tool["id"]],
                         "stream": True})
        frames = numbered(parse_sse(r.content))
        run_id = r.headers["x-qlaud-run-id"]
        messages = c.get(f"/v1/threads/{thread}/messages").json()["data"]
        run = c.get(f"/v1/threads/{thread}/runs/{run_id}").json()
        replay = numbered(parse_sse(c.get(f"/v1/threads/{thread}/runs/{run_id}/events",
                                          headers={"Last-Event-ID": "3"}).content))
        nxt = c.post(f"/v1/threads/{thread}/messages", json={"model": MODEL, "max_tokens": 100, "content": "thanks"})
    assert loop.started == [run_id]
    assert [i for i, _, _ in frames] == list(range(1, len(frames) + 1))
    names = [e for _, e, _ in frames]
    assert names.count("message_start") == 2 and names[-1] == "qlaud.done"
    assert names.index("qlaud.tool_dispatch_start") < names.index("qlaud.tool_dispatch_done") < names.index(
        "qlaud.iteration_start")
    done = [d["tool_use_id"] for _, e, d in frames if e == "qlaud.tool_dispatch_done"]
    assert done == ["toolu_d1", "toolu_d2"]  # the model's order
    assert replay == frames[3:]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [b["tool_use_id"] for b in messages[2]["content"]] == ["toolu_d1", "toolu_d2"]
    assert json.loads(messages[2]["content"][0]["content"]) == {"q": 1}  # /echo answers the input
    assert text_of(messages[3]) == "all done"
    assert run["status"] == "completed" and run["iterations"] == 2
    assert frames[-1][2]["cost_micros"] == run["cost_micros"] > 0
    assert nxt.status_code == 200, nxt.text  # the durable driver released the thread
    with gw.admin() as admin:
        u = admin.get(f"/v1/keys/{key['id']}/usage").json()
    assert [e["status"] for e in u["events"]] == ["ok", "ok", "ok"] and u["reserved_micros"] == 0
    assert len(receiver.deliveries_for("toolu_d1")) == len(receiver.deliveries_for("toolu_d2")) == 1


def test_a_non_streaming_tool_turn_waits_for_the_durable_run_and_answers_its_message(durable):
    gw, loop, receiver = durable
    tool = register(gw, receiver, "/echo")
    key = gw.mint()
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup", {"q": 1}, id="toolu_n1")]), FakeReply(text="42"))
    with gw.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
        r = c.post(f"/v1/threads/{thread}/messages",
                   json={"model": MODEL, "max_tokens": 100, "content": "q", "tools": [tool["id"]]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["content"] == [{"type": "text", "text": "42"}] and body["stop_reason"] == "end_turn"
    assert r.headers["x-qlaud-iterations"] == "2" and r.headers["x-qlaud-assistant-seq"] == "4"
    assert body["usage"]["output_tokens"] > 0 and int(r.headers["x-qlaud-cost-micros"]) > 0
