"""The README tutorial's tool step, end to end in local mode (issue 3's "done when"):
register `lookup_account` whose webhook is `examples/webhook_receiver.py`, send a streamed turn to
the offline model `threadgate-local` that uses it, and find the tool's answer in the final message
and in the thread history. No provider key, no fake upstream: everything runs on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

from examples import webhook_receiver
from tests.fakes.servers import serve_asgi

class LateApp:
    """The receiver needs the tool's secret, which exists only once the tool is registered with
    the receiver's URL: serve this first, then plug in the example app built with the secret
    (as a user restarts the receiver with WEBHOOK_SECRET)."""

    app: Any = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    from anthropic._streaming import SSEDecoder

    return [(e.event, e.json()) for e in SSEDecoder().iter_bytes(iter([raw])) if e.event]


def test_tutorial_tool_flow_in_local_mode(gateway_factory):
    gw = gateway_factory(mode="local")  # local mode: loopback webhooks allowed by default
    example = webhook_receiver
    late = LateApp()
    with serve_asgi(late) as receiver_url:
        # 1. Signup: a capped key bound to an end user, and a thread.
        user = gw.mint(max_spend_usd=5, end_user_id="u_42")
        with gw.client(user["secret"]) as c:
            thread_id = c.post("/v1/threads", json={}).json()["id"]
        # 2. Register the tool (admin), start the receiver with its secret.
        with gw.admin() as admin:
            r = admin.post("/v1/tools", json={
                "name": "lookup_account",
                "description": "Look up a customer account by id: plan and email.",
                "input_schema": {"type": "object", "properties": {"account_id": {"type": "string"}},
                                 "required": ["account_id"]},
                "webhook_url": receiver_url + "/tools/lookup_account",
                "timeout_ms": 10000,
            })
        assert r.status_code == 201, r.text
        tool = r.json()
        late.app = example.create_app(tool["secret"])

        # 3. A streamed turn that names the tool with its input.
        with gw.client(user["secret"]) as c:
            r = c.post(f"/v1/threads/{thread_id}/messages", json={
                "model": "threadgate-local", "max_tokens": 200, "stream": True, "tools": [tool["id"]],
                "content": 'Please lookup_account {"account_id": "acct_42"} and tell me the plan.',
            })
            assert r.status_code == 200, r.text
            events = sse(r.content)
            stored = c.get(f"/v1/threads/{thread_id}/messages").json()["data"]

            # An unknown account: the tool's own error reaches the model, and the thread goes on.
            r2 = c.post(f"/v1/threads/{thread_id}/messages", json={
                "model": "threadgate-local", "max_tokens": 200, "tools": [tool["id"]],
                "content": 'lookup_account {"account_id": "acct_nope"}',
            })
            assert r2.status_code == 200, r2.text

    names = [n for n, _ in events]
    assert names[-1] == "qlaud.done" and names.count("message_start") == 2
    done = dict(events)["qlaud.tool_dispatch_done"]
    assert done["is_error"] is False
    assert json.loads(done["output"]) == {"plan": "pro", "email": "ada@example.com"}
    final_text = "".join(
        e["delta"]["text"] for n, e in events[names.index("qlaud.iteration_start"):]
        if n == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )
    assert final_text.startswith("Tool results:") and "ada@example.com" in final_text and "pro" in final_text
    assert events[-1][1]["iterations"] == 2 and events[-1][1]["cost_micros"] > 0

    # The thread holds the whole exchange: question, tool call, tool result, answer.
    assert [(m["seq"], m["role"]) for m in stored] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    (call,) = [b for b in stored[1]["content"] if b["type"] == "tool_use"]
    assert call["name"] == "lookup_account" and call["input"] == {"account_id": "acct_42"}
    (result,) = stored[2]["content"]
    assert result["tool_use_id"] == call["id"] and not result.get("is_error")
    assert json.loads(result["content"]) == {"plan": "pro", "email": "ada@example.com"}
    assert stored[3]["content"][0]["text"] == final_text

    assert r2.json()["content"][0]["text"] == "Tool results: no such account"
    assert late.app.state.calls == 2  # each tool call ran exactly once
