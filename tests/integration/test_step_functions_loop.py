"""The durable tool loop on AWS, executed: the real ASL file run by moto, the real loop and
webhooks handlers, real webhook receivers over HTTP, DynamoDB under moto (tests/integration/
aws_tool_loop.py says how each AWS part is stood in for). Issue #8."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.conftest import Gateway, gateway_app
from tests.fakes.fake_anthropic import FakeReply, FakeToolUse
from tests.fakes.servers import serve_asgi
from tests.fakes.webhook_receivers import WebhookReceiver, running_webhook_receiver
from tests.integration.aws_tool_loop import AwsToolLoop, aws_tool_loop
from tests.integration.test_tool_loop import history, new_thread
from tests.integration.test_tool_loop import register as register_tool

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
    from threadgate.bootstrap import ensure_first_admin

    rt = aws_module.runtime()
    admin = ensure_first_admin(rt.stores, rt.clock, rt.settings)
    with serve_asgi(gateway_app(rt)) as url:
        yield Gateway(url=url, admin_key=admin, runtime=rt, fake=fake_anthropic)


def register(gw, receiver: WebhookReceiver, name: str, path: str) -> dict[str, Any]:
    """A tool named `name` plus a suffix (tool names are unique per account; the module's tests
    share one account)."""
    return register_tool(gw, receiver, f"{name}_{uuid.uuid4().hex[:6]}", path)


def usage_events(gw, key: dict[str, Any]) -> list[dict[str, Any]]:
    with gw.admin() as admin:
        r = admin.get(f"/v1/keys/{key['id']}/usage")
    assert r.status_code == 200, r.text
    return r.json()["events"]


def event_types(aws: AwsToolLoop, run_id: str) -> list[str]:
    """The run's stored §6.2 events (what a client streaming the run receives), by type."""
    events = aws.stores.runs.list_events(run_id)
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))  # dense, from 1
    return [e["type"] for _, e in events]


def turn(aws: AwsToolLoop, key: dict[str, Any], thread_id: str, tools: list[dict[str, Any]], text: str = "look it up",
         *, max_iterations: int = 8, tool_loop: Any = "aws"):
    """A thread turn as the stream function runs it: its first model call here, the rest handed
    to the Step Functions driver (`Runtime.tool_loop`; tool_loop=None: the inline driver).
    Returns (run id, outcome of the request)."""
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
        tools=[rt.stores.tools.get_tool(principal.account_id, t["id"]) for t in tools], max_iterations=max_iterations,
    )
    ctx = start_run(deps, request)
    driver = rt.tool_loop if tool_loop == "aws" else tool_loop
    events = RunEventLog(deps.runs, request.run_id)

    async def go():
        step = await drive(deps, ctx, events, tool_loop=driver)
        await events.flush()
        return step

    return request.run_id, aws.in_request(go())


@dataclass
class OneCall:
    key: dict[str, Any]
    thread_id: str
    run_id: str


def one_call(aws: AwsToolLoop, gw, receiver: WebhookReceiver, path: str, tool_use_id: str, *,
             input: dict[str, Any] | None = None, answer: str = "ok") -> OneCall:
    """A turn whose model calls one tool (served at `path`), then answers `answer`; the request
    has handed the run to the state machine when this returns."""
    tool = register(gw, receiver, "lookup", path)
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse(tool["name"], input or {}, id=tool_use_id)]),
                    FakeReply(text=answer))
    run_id, step = turn(aws, key, thread_id, [tool])
    assert step["next"] == "tools"
    return OneCall(key, thread_id, run_id)


def test_one_tool_call_runs_as_an_execution_and_completes_the_turn(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/echo", "toolu_one", input={"q": "acct_42"}, answer="Found it.")
    key, thread_id, run_id = call.key, call.thread_id, call.run_id

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


def test_a_text_answer_ends_in_the_request_without_an_execution(aws, gw, receiver):
    tool = register(gw, receiver, "lookup", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(text="No tool needed."))

    run_id, step = turn(aws, key, thread_id, [tool])

    assert step["next"] == "done"
    assert run_id not in {e["name"] for e in aws.executions()}
    assert [m["content"][0]["type"] for m in history(gw, key, thread_id)] == ["text", "text"]
    assert len(usage_events(gw, key)) == 1
    assert receiver.deliveries == [] and aws.webhook_receives == []


def test_two_tool_calls_of_one_answer_are_delivered_in_parallel_and_answered_in_the_models_order(aws, gw, receiver):
    slow = register(gw, receiver, "slow", "/slow/0.3")
    quick = register(gw, receiver, "quick", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse(slow["name"], {"q": "a"}, id="toolu_slow"),
                                         FakeToolUse(quick["name"], {"q": "b"}, id="toolu_quick")]),
                    FakeReply(text="Both done."))

    run_id, _ = turn(aws, key, thread_id, [slow, quick])

    assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
    assert aws.states_entered(run_id).count("DeliverTool") == 2
    # Both messages were out before either answer came back: the Map sent them at once.
    assert {tool_use_id for tool_use_id, _, _ in aws.webhook_receives[:2]} == {"toolu_slow", "toolu_quick"}
    results = history(gw, key, thread_id)[2]["content"]
    assert [(r["tool_use_id"], r["content"]) for r in results] == [
        ("toolu_slow", '{"q": "a"}'), ("toolu_quick", '{"q": "b"}')]
    assert len(usage_events(gw, key)) == 2
    assert event_types(aws, run_id).count("qlaud.tool_dispatch_done") == 2


def test_a_webhook_failing_twice_succeeds_on_the_third_receive_with_one_delivery_id(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/flaky/2", "toolu_flaky", input={"q": "x"})

    assert aws.wait_for_execution(call.run_id)["status"] == "SUCCEEDED"
    deliveries = receiver.deliveries_for("toolu_flaky")
    assert [d.attempt for d in deliveries] == [1, 2, 3]  # X-Qlaud-Attempt = the SQS receive count
    assert all(d.signature_valid for d in deliveries) and len({d.body for d in deliveries}) == 1
    assert aws.webhook_receives == [("toolu_flaky", 1, "queue"), ("toolu_flaky", 2, "queue"), ("toolu_flaky", 3, "queue")]
    [result] = history(gw, call.key, call.thread_id)[2]["content"]
    assert (result["content"], result.get("is_error", False)) == ('{"q": "x"}', False)
    assert aws.states_entered(call.run_id).count("DeliverTool") == 1  # one task, answered once


def test_a_webhook_failing_every_receive_gives_the_model_the_same_reason_as_in_process(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/status/503", "toolu_down", answer="It is down.")

    assert aws.wait_for_execution(call.run_id)["status"] == "SUCCEEDED"
    assert [d.attempt for d in receiver.deliveries_for("toolu_down")] == [1, 2, 3, 4]
    messages = history(gw, call.key, call.thread_id)
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_down", "is_error": True,
                                       "content": "webhook failed: HTTP 503 after 4 attempts"}]
    assert messages[3]["content"] == [{"type": "text", "text": "It is down."}]
    assert len(usage_events(gw, call.key)) == 2


def test_a_429_with_retry_after_is_received_again_no_sooner_than_asked(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/limited/1/1", "toolu_limited", input={"q": "r"})

    assert aws.wait_for_execution(call.run_id)["status"] == "SUCCEEDED"
    first, second = receiver.deliveries_for("toolu_limited")
    assert (first.attempt, second.attempt) == (1, 2)
    # The requeue backoff is 0 in these tests: only the receiver's Retry-After can explain the wait.
    assert second.received_at - first.received_at >= 1.0
    assert history(gw, call.key, call.thread_id)[2]["content"][0]["content"] == '{"q": "r"}'


class ToolsOutage:
    """The webhooks function's view of the tools table while reading it fails (a KMS or DynamoDB
    outage): every receive of a call fails before delivering anything."""

    def __init__(self, tools: Any):
        self._tools = tools

    def get_tool(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("KMS Decrypt: ThrottlingException")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tools, name)


def test_a_call_the_worker_cannot_settle_goes_to_the_dlq_and_the_model_sees_an_error(aws, gw, receiver, monkeypatch):
    import dataclasses

    from threadgate.background.webhook_worker import GAVE_UP

    stores = aws.webhooks.runtime.stores
    monkeypatch.setattr(aws.webhooks.runtime, "stores", dataclasses.replace(stores, tools=ToolsOutage(stores.tools)))
    call = one_call(aws, gw, receiver, "/echo", "toolu_dead", answer="Sorry.")
    run_id = call.run_id

    assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
    assert aws.webhook_receives == [("toolu_dead", n, "queue") for n in (1, 2, 3, 4)] + [("toolu_dead", 5, "dlq")]
    assert receiver.deliveries_for("toolu_dead") == []
    failed = [e["taskFailedEventDetails"] for e in aws.history(run_id) if e["type"] == "TaskFailed"]
    assert [f["error"] for f in failed] == ["Webhook.GaveUp"]  # the DLQ handler's SendTaskFailure
    assert "DeliveryGaveUp" in aws.states_entered(run_id)  # the Map's Catch
    messages = history(gw, call.key, call.thread_id)
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_dead", "is_error": True,
                                       "content": GAVE_UP}]
    assert messages[3]["content"] == [{"type": "text", "text": "Sorry."}]  # the turn completed


def test_a_model_that_always_asks_for_tools_stops_at_the_limit_with_a_valid_thread(aws, gw, receiver):
    tool = register(gw, receiver, "lookup", "/echo")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(*[FakeReply(tool_uses=[FakeToolUse(tool["name"], {"q": str(i)}, id=f"toolu_again_{i}")])
                      for i in range(1, 4)])

    run_id, _ = turn(aws, key, thread_id, [tool], max_iterations=3)

    assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
    states = aws.states_entered(run_id)
    assert states.count("ModelStep") == 2 and states[-1] == "LimitReached"
    messages = history(gw, key, thread_id)
    assert [m["role"] for m in messages] == ["user"] + ["assistant", "user"] * 3  # every tool_use answered
    assert messages[-1]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_again_3", "is_error": True,
                                        "content": "not executed: iteration limit reached"}]
    assert len(receiver.deliveries) == 2  # the third call was never delivered
    assert len(usage_events(gw, key)) == 3
    done = aws.stores.runs.list_events(run_id)[-1][1]
    assert (done["type"], done["iterations"], done["hit_max_iterations"]) == ("qlaud.done", 3, True)


def test_a_cap_exhausted_mid_run_ends_the_run_failed_after_the_tool_results(aws, gw, receiver):
    from threadgate.domain.keys import authenticate

    call = one_call(aws, gw, receiver, "/slow/2", "toolu_capped", answer="never")
    key, thread_id, run_id = call.key, call.thread_id, call.run_id
    account_id = authenticate(aws.stores.keys, key["secret"]).account_id
    aws.stores.keys.update_key(account_id, key["id"], cap_micros=1)  # while the webhook works

    assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
    assert aws.states_entered(run_id)[-1] == "RunFailed"
    assert [m["content"][0]["type"] for m in history(gw, key, thread_id)] == ["text", "tool_use", "tool_result"]
    assert len(usage_events(gw, key)) == 1  # the refused call was never made
    types = event_types(aws, run_id)
    assert types[-2:] == ["qlaud.error", "qlaud.done"]
    error = aws.stores.runs.list_events(run_id)[-2][1]["error"]
    assert error["type"] == "key_cap_exceeded", error


def test_the_thread_deleted_mid_run_ends_the_run_without_a_failed_execution(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/slow/2", "toolu_orphan", answer="never")
    key, thread_id, run_id = call.key, call.thread_id, call.run_id
    with gw.client(key["secret"]) as c:
        assert c.delete(f"/v1/threads/{thread_id}").status_code == 200

    described = aws.wait_for_execution(run_id)
    assert described["status"] == "SUCCEEDED", aws.states_entered(run_id)
    assert aws.states_entered(run_id)[-1] == "RunFailed"
    with gw.client(key["secret"]) as c:
        assert c.get(f"/v1/threads/{thread_id}/messages").status_code == 404
    assert len(usage_events(gw, key)) == 1


# --- driver equivalence ------------------------------------------------------------------------------


def _script(gw, tools: dict[str, dict[str, Any]], tag: str) -> None:
    """Two tool iterations (two parallel calls, one of them flaky; then one call), then text.
    `tag` keeps tool_use ids distinct per run (same length, so the same token counts)."""
    gw.fake.enqueue(
        FakeReply(tool_uses=[FakeToolUse(tools["flaky"]["name"], {"q": "1"}, id=f"toolu_{tag}_1"),
                             FakeToolUse(tools["echo"]["name"], {"q": "2"}, id=f"toolu_{tag}_2")]),
        FakeReply(text="One more.", tool_uses=[FakeToolUse(tools["error"]["name"], {"q": "3"}, id=f"toolu_{tag}_3")]),
        FakeReply(text="All done."),
    )


def _normalized(value: Any, tag: str) -> Any:
    """Ids aside: run, thread, message and request ids dropped; the run's tool_use ids untagged."""
    if isinstance(value, dict):
        return {k: _normalized(v, tag) for k, v in value.items()
                if k not in {"id", "thread_id", "request_id", "run_id", "created_at", "seq", "latency_ms"}}
    if isinstance(value, list):
        return [_normalized(v, tag) for v in value]
    if isinstance(value, str):
        return value.replace(f"toolu_{tag}_", "toolu_")
    return value


def test_the_inline_and_step_functions_drivers_give_the_same_thread_usage_and_events(aws, gw, receiver):
    tools = {name: register(gw, receiver, name, path)
             for name, path in (("flaky", "/flaky/1"), ("echo", "/echo"), ("error", "/tool-error"))}
    runs = {}
    for tag, driver in (("a", None), ("b", "aws")):
        key = gw.mint()
        thread_id = new_thread(gw, key)
        _script(gw, tools, tag)
        run_id, _ = turn(aws, key, thread_id, list(tools.values()), tool_loop=driver)
        if driver == "aws":
            assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
        runs[tag] = (key, thread_id, run_id)

    def observed(tag: str) -> dict[str, Any]:
        key, thread_id, run_id = runs[tag]
        usage = [{k: e[k] for k in ("model", "input_tokens", "output_tokens", "cost_micros")}
                 for e in reversed(usage_events(gw, key))]
        return _normalized({
            "thread": [{k: m[k] for k in ("role", "content", "model")} for m in history(gw, key, thread_id)],
            "usage": usage,
            "events": [event for _, event in aws.stores.runs.list_events(run_id)],
        }, tag)

    inline, durable = observed("a"), observed("b")
    assert len(inline["thread"]) == 6 and len(inline["usage"]) == 3
    assert inline["thread"] == durable["thread"]
    assert inline["usage"] == durable["usage"]
    assert [e["type"] for e in inline["events"]] == [e["type"] for e in durable["events"]]
    assert inline["events"] == durable["events"]
    # The flaky tool was delivered twice on both paths (attempts 1, 2), with one delivery id each.
    assert [d.attempt for d in receiver.deliveries_for("toolu_a_1")] == [1, 2]
    assert [d.attempt for d in receiver.deliveries_for("toolu_b_1")] == [1, 2]


def test_a_redelivered_answered_message_only_answers_again_and_never_calls_the_webhook_twice(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/echo", "toolu_twice")
    assert aws.wait_for_execution(call.run_id)["status"] == "SUCCEEDED"
    [original] = [r["body"] for batch in aws.webhooks.invocations for r in batch["Records"]
                  if "toolu_twice" in r["body"]]

    # SQS delivers at least once: the same message again, after the call was answered.
    sqs = aws.session.client("sqs")
    sqs.send_message(QueueUrl=aws.queue_url, MessageBody=original)
    deadline = time.monotonic() + 10

    def waiting() -> int:
        return int(sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"]["ApproximateNumberOfMessages"])

    while aws.webhook_receives.count(("toolu_twice", 1, "queue")) < 2 or waiting():
        assert time.monotonic() < deadline
        time.sleep(0.02)

    # Deleted after one receive (its late answer dropped), not retried; the webhook not called again.
    assert aws.webhook_receives.count(("toolu_twice", 1, "queue")) == 2
    assert len(receiver.deliveries_for("toolu_twice")) == 1
    assert not aws.errors


def test_a_cancel_during_a_tool_call_stops_the_run_at_the_next_step_and_ignores_the_late_answer(aws, gw, receiver):
    call = one_call(aws, gw, receiver, "/slow/2", "toolu_late", answer="never")
    key, thread_id, run_id = call.key, call.thread_id, call.run_id
    aws.stores.runs.update_run(run_id, {"cancel_requested": True})  # what the cancel route records

    assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
    assert aws.states_entered(run_id)[-1] == "Cancelled"
    messages = history(gw, key, thread_id)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    [result] = messages[2]["content"]
    assert result["is_error"] and result["content"] != '{}'  # not the webhook's late answer
    assert len(usage_events(gw, key)) == 1
    assert aws.stores.runs.get_run(run_id).status == "cancelled"


# --- the client's view: the relayed stream, dropped and resumed ----------------------------------------


def _frames(lines: Iterator[str]) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """(id, event) of each SSE frame, as an EventSource would see them."""
    import json

    seq, data = None, []
    for line in lines:
        if line.startswith("id:"):
            seq = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield seq, json.loads("\n".join(data))
            seq, data = None, []


def test_a_stream_dropped_mid_run_resumes_with_last_event_id_without_gap_or_duplicate(aws, gw, receiver):
    tool = register(gw, receiver, "lookup", "/slow/1")
    key = gw.mint()
    thread_id = new_thread(gw, key)
    gw.fake.enqueue(FakeReply(tool_uses=[FakeToolUse(tool["name"], {"q": "late"}, id="toolu_resume")]),
                    FakeReply(text="Found it after a while."))
    body = {"model": MODEL, "max_tokens": 200, "content": "look it up", "tools": [tool["id"]], "stream": True}

    with gw.client(key["secret"]) as client:
        with client.stream("POST", f"/v1/threads/{thread_id}/messages", json=body) as response:
            assert response.status_code == 200
            run_id = response.headers["request-id"]
            before = []
            for seq, event in _frames(response.iter_lines()):
                if event["type"] == "ping":
                    continue
                before.append((seq, event))
                if event["type"] == "qlaud.tool_dispatch_start":
                    break  # the client drops the stream while the tool runs in the execution
        resume = {"Last-Event-ID": str(before[-1][0])}
        with client.stream("GET", f"/v1/threads/{thread_id}/runs/{run_id}/events", headers=resume) as response:
            assert response.status_code == 200
            after = [(seq, event) for seq, event in _frames(response.iter_lines()) if event["type"] != "ping"]

    assert aws.wait_for_execution(run_id)["status"] == "SUCCEEDED"
    seen = before + after
    assert [seq for seq, _ in seen] == list(range(1, len(seen) + 1))  # no gap, no duplicate
    assert seen == [(seq, event) for seq, event in aws.stores.runs.list_events(run_id)]  # all of them
    types = [event["type"] for _, event in seen]
    assert types.count("message_start") == 2 and types[-1] == "qlaud.done"
    assert "qlaud.tool_dispatch_done" in [event["type"] for _, event in after]
