"""The durable tool loop on AWS, executed: the real ASL file run by moto, the real loop and
webhooks handlers, real webhook receivers over HTTP, DynamoDB under moto (tests/integration/
aws_tool_loop.py says how each AWS part is stood in for). Issue #8."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterator

import pytest

from tests.conftest import Gateway
from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.servers import serve_asgi
from tests.fakes.webhook_receivers import WebhookReceiver, running_webhook_receiver
from tests.integration.aws_tool_loop import AwsToolLoop, aws_tool_loop

MODEL = "claude-haiku-4-5"
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver(hang_s=10) as running:
        yield running


@pytest.fixture(scope="module")
def aws_module(fake_anthropic, tmp_path_factory) -> Iterator[AwsToolLoop]:
    """One moto world per module (tests use their own keys, threads and tools in it)."""
    with aws_tool_loop(fake_anthropic, tmp_path_factory.mktemp("aws")) as loop:
        yield loop


@pytest.fixture
def aws(aws_module, fake_anthropic) -> AwsToolLoop:
    fake_anthropic.reset()
    fake_anthropic.default_reply = None
    aws_module.webhook_receives.clear()
    return aws_module


@pytest.fixture(scope="module")
def gw(aws_module, fake_anthropic) -> Iterator[Gateway]:
    """The gateway's HTTP API over the same tables (keys, threads, tools, history, usage)."""
    from threadgate.api.app import create_app
    from threadgate.bootstrap import ensure_first_admin

    rt = aws_module.runtime()
    admin = ensure_first_admin(rt.stores, rt.clock, rt.settings)
    with serve_asgi(create_app(rt)) as url:
        yield Gateway(url=url, admin_key=admin, runtime=rt, fake=fake_anthropic)


def register(gw, receiver: WebhookReceiver, name: str, path: str, timeout_ms: int = 5000) -> dict[str, Any]:
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


def history(gw, key: dict[str, Any], thread_id: str) -> list[dict[str, Any]]:
    with gw.client(key["secret"]) as c:
        r = c.get(f"/v1/threads/{thread_id}/messages", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def turn(aws: AwsToolLoop, key: dict[str, Any], thread_id: str, tools: list[dict[str, Any]], text: str = "look it up"):
    """A thread turn as the stream function runs it: its first model call here, the rest handed
    to the Step Functions driver (`Runtime.tool_loop`). Returns (run id, outcome of the request)."""
    from threadgate.domain.driver import drive
    from threadgate.domain.keys import authenticate, principal_of
    from threadgate.domain.run_events import RunEventLog
    from threadgate.domain.steps import TurnRequest, start_run

    rt = aws.request_runtime
    deps = rt.run_deps()
    principal = principal_of(authenticate(rt.stores.keys, key["secret"]))
    request = TurnRequest(
        run_id=f"req_{uuid.uuid4().hex[:24]}", principal=principal,
        thread=rt.stores.threads.get_thread(principal.account_id, thread_id), model=rt.model(MODEL),
        params={"max_tokens": 200}, content=[{"type": "text", "text": text}],
        tools=[rt.stores.tools.get_tool(principal.account_id, t["id"]) for t in tools],
    )
    ctx = start_run(deps, request)
    step = asyncio.run(drive(deps, ctx, RunEventLog(deps.runs, request.run_id), tool_loop=rt.tool_loop))
    return request.run_id, step


def test_one_tool_call_runs_as_an_execution_and_completes_the_turn(aws, gw, receiver):
    tool = register(gw, receiver, "lookup", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("lookup", {"q": "acct_42"}, id="toolu_one")]),
                    FakeReply(text="Found it."))

    run_id, step = turn(aws, key, thread_id, [tool])

    assert step["next"] == "tools"  # the request handed the run over after its first call
    described = aws.wait_for_execution(run_id)
    assert described["status"] == "SUCCEEDED", described
    assert aws.states_entered(run_id) == ["DispatchTools", "DeliverTool", "ToolsDone", "ModelStep", "Route", "Done"]
    messages = history(gw, key, thread_id)
    assert [(m["role"], m["content"][0]["type"]) for m in messages] == [
        ("user", "text"), ("assistant", "tool_use"), ("user", "tool_result"), ("assistant", "text")]
    assert {m["request_id"] for m in messages} == {run_id}
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_one", "content": '{"q": "acct_42"}'}]
    [delivery] = receiver.deliveries_for("toolu_one")
    assert (delivery.attempt, delivery.signature_valid) == (1, True)
    assert aws.webhook_receives == [("toolu_one", 1, "queue")]
