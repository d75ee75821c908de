"""The `stream` function as deployed (run.sh, the app, Lambda Web Adapter in response_stream mode,
the stack's environment) under a Lambda Runtime API emulator, reached through a function URL.

What a client that leaves mid-turn does to the invocation, as observed here: the emulator closes
the response channel and LWA drops the app's stream; it has asked for the next event already.
Lambda would freeze the environment then (the proxy does: runtime_api_proxy.py), with the turn
unsettled, unless an extension registered for INVOKE has not asked for its next event yet. The app
is such an extension (threadgate/background/invocation_hold.py): it holds the invocation until the
turn is persisted and settled. Both sides are tested: with the hold, and with its registration
refused.

The upstream fakes hold their answers at a gate the test opens, so "the client read this before
the model had finished" is a fact, not a timing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.infra import lwa_build
from tests.infra.runtime_api_proxy import RUNTIME_NEXT, Sandbox
from tests.infra.stream_function import (
    AwsStandIn,
    Deployed,
    StreamFunction,
    deployed_stream_function,
    running_stream_function,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first test may wait for the LWA build

MASTER_KEY = "qlk_live_stream_function_tier_master_0001"
HOLD = "threadgate-invocation-hold"
REPLY = " ".join(f"w{i}" for i in range(30))
WAIT_S = 30.0


# --- the function and its world ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tools(synth) -> tuple[Path, Path]:
    """(lambda-adapter, cargo-lambda), or a skip saying what is missing."""
    version = lwa_build.LAYER_RELEASES.get(synth.stack.config.lwa_layer_version)
    assert version, (f"layer version {synth.stack.config.lwa_layer_version} is pinned: add its crate release "
                     "to lwa_build.LAYER_RELEASES so the tier runs what is deployed")
    emulator = shutil.which("cargo-lambda", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if emulator is None:
        pytest.skip("cargo-lambda (pip install cargo-lambda, in requirements-dev.txt) is not installed")
    if shutil.which("cargo") is None and not lwa_build.binary(version).exists():
        pytest.skip(f"cargo is not installed: cannot build Lambda Web Adapter {version} from crates.io")
    return lwa_build.build(version), Path(emulator)


@pytest.fixture(scope="module")
def deployed(synth) -> Deployed:
    return deployed_stream_function(synth)


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[Any]:
    from tests.fakes.fake_openai import running_fake_openai

    with running_fake_openai() as fake:
        yield fake


@pytest.fixture(scope="module")
def world(deployed, fake_anthropic, fake_openai) -> Iterator[dict[str, Any]]:
    """The stand-in AWS resources the stack's environment names, provider keys in Secrets Manager
    (as deployed), the first admin key, and the resolved environment."""
    from threadgate.bootstrap import ensure_first_admin
    from threadgate.config import Settings
    from threadgate.runtime import SystemClock
    from threadgate.stores.dynamodb import open_dynamodb

    aws = AwsStandIn()
    try:
        env = aws.resolve(deployed.environment, deployed.resources)
        prefix = env["THREADGATE_PROVIDER_SECRETS_PREFIX"]
        aws.put_secret(f"{prefix}anthropic", fake_anthropic.api_key)
        aws.put_secret(f"{prefix}openai", fake_openai.api_key)
        env.update({
            "AWS_ENDPOINT_URL": aws.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url, "OPENAI_BASE_URL": fake_openai.v1_url,
        })
        settings = Settings(**{name.removeprefix("THREADGATE_").lower(): value for name, value in env.items()
                               if name.startswith("THREADGATE_")}, master_key=MASTER_KEY)
        stores = open_dynamodb(settings, session=aws.session, endpoint_url=aws.endpoint)
        ensure_first_admin(stores, SystemClock(), settings)
        yield {"env": env, "stores": stores}
        stores.close()
    finally:
        aws.close()


@pytest.fixture(scope="module")
def function(tools, deployed, world, tmp_path_factory) -> Iterator[StreamFunction]:
    lwa, emulator = tools
    with running_stream_function(deployed, world["env"], lwa=lwa, cargo_lambda=emulator,
                                 workdir=tmp_path_factory.mktemp("stream-fn")) as fn:
        yield fn


@pytest.fixture(scope="module")
def user_key(function) -> str:
    r = httpx.post(function.url + "/v1/keys", json={"name": "tier"}, headers={"x-api-key": MASTER_KEY}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["secret"]


@pytest.fixture
def fakes(fake_anthropic, fake_openai) -> Iterator[tuple[Any, Any]]:
    for fake in (fake_anthropic, fake_openai):
        fake.reset()
        fake.default_reply = REPLY
    yield fake_anthropic, fake_openai
    for fake in (fake_anthropic, fake_openai):
        fake.default_reply = None


# --- streaming through the function URL -----------------------------------------------------------


def _thread(function: StreamFunction, key: str) -> str:
    r = httpx.post(function.url + "/v1/threads", json={}, headers={"x-api-key": key}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


ROUTES = {
    # name: (upstream, path (None: a new thread's messages), streamed request body)
    "thread turn": ("anthropic", None, {"model": "claude-haiku-4-5", "max_tokens": 100, "content": "hi",
                                        "stream": True}),
    "/v1/messages": ("anthropic", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 100, "stream": True,
                                                   "messages": [{"role": "user", "content": "hi"}]}),
    "/v1/chat/completions": ("openai", "/v1/chat/completions", {
        "model": "gpt-5.4-nano", "max_completion_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}),
    "/v1/responses": ("openai", "/v1/responses", {"model": "gpt-5.4-nano", "max_output_tokens": 100, "stream": True,
                                                  "input": "hi"}),
}
# Events the model sends before the gate: enough for the first text (Responses opens with 4 others).
EVENTS_BEFORE_GATE = {"/v1/responses": 6}


def _text_of(data: dict[str, Any]) -> str:
    """The answer text one SSE data object carries (Anthropic deltas, OpenAI chunks or Responses events)."""
    if data.get("type") == "content_block_delta":
        return data["delta"].get("text", "")
    if data.get("type") == "response.output_text.delta":
        return data["delta"]
    choices = data.get("choices") or []
    return "".join((c.get("delta") or {}).get("content") or "" for c in choices)


def _data_lines(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


@pytest.mark.parametrize("route", list(ROUTES))
def test_the_answer_streams_through_the_function_url_while_the_model_is_still_answering(
        function, user_key, fakes, route):
    upstream, path, body = ROUTES[route]
    fake = fakes[0] if upstream == "anthropic" else fakes[1]
    path = path or f"/v1/threads/{_thread(function, user_key)}/messages"
    gate = fake.hold_stream_after(EVENTS_BEFORE_GATE.get(route, 4))  # the model sends its first few events, then waits
    texts: list[str] = []
    try:
        with httpx.stream("POST", function.url + path, json=body, headers={"x-api-key": user_key},
                          timeout=WAIT_S) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = _data_lines(r)
            while not "".join(texts).strip():
                texts.append(_text_of(next(lines)))
            # Text reached the client through emulator, LWA and uvicorn while the model is held.
            assert not gate.is_set()
            gate.set()
            texts += [_text_of(data) for data in lines]
    finally:
        gate.set()
    assert "".join(texts).split() == REPLY.split()


# --- a client that leaves mid-turn --------------------------------------------------------------


def _leave_mid_turn(function: StreamFunction, key: str, fake: Any) -> tuple[str, Any]:
    """Start a streamed thread turn, read its first text, hang up. The model is held at its gate."""
    thread_id = _thread(function, key)
    gate = fake.hold_stream_after(4)
    with httpx.stream("POST", f"{function.url}/v1/threads/{thread_id}/messages", json=ROUTES["thread turn"][2],
                      headers={"x-api-key": key}, timeout=WAIT_S) as r:
        assert r.status_code == 200
        for data in _data_lines(r):
            if _text_of(data):
                break
    return thread_id, gate


def _wait(condition: Any, what: str, sandbox: Sandbox) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}; calls: {[(c.method, c.path) for c in sandbox.snapshot()]}"
        time.sleep(0.02)


def _runtime_done_after_broken_upload(sandbox: Sandbox) -> bool:
    """LWA's upload of the last response broke off and it asked for the next event since."""
    calls = sandbox.snapshot()
    uploads = [i for i, c in enumerate(calls) if c.is_upload]
    if not uploads or sandbox.uploads:
        return False
    last = calls[uploads[-1]]
    return last.body_done_at is None and any(c.path == RUNTIME_NEXT for c in calls[uploads[-1] + 1:])


def _state(world: dict[str, Any], thread_id: str) -> tuple[list[Any], list[Any]]:
    """(the thread's messages, its reservations still open) straight from the tables."""
    stores = world["stores"]
    messages = stores.threads.list_messages(stores.keys.first_account().id, thread_id)
    open_reservations = [r for r in stores.ledger.expired_reservations(now_ms=2**62) if r.thread_id == thread_id]
    return messages, open_reservations


def test_a_client_that_leaves_mid_turn_ends_the_invocation_and_the_hold_keeps_it_until_the_turn_is_settled(
        function, user_key, fakes, world):
    sandbox = function.sandbox
    thread_id, gate = _leave_mid_turn(function, user_key, fakes[0])
    try:
        # What a disconnect does: the response channel closes, LWA asks for the next event.
        _wait(lambda: _runtime_done_after_broken_upload(sandbox), "LWA never gave up the response", sandbox)
        _wait(lambda: "response channel closed" in function.log("adapter"), "LWA logged no closed channel", sandbox)
        # The model is still held, so the turn cannot be over: only the hold keeps Lambda from
        # freezing the environment now.
        assert not gate.is_set() and not sandbox.frozen
        messages, open_reservations = _state(world, thread_id)
        assert [m.role for m in messages] == ["user"] and len(open_reservations) == 1
        freezes = len(sandbox.freezes)
        gate.set()
        _wait(lambda: len(sandbox.freezes) > freezes, "the invocation never ended", sandbox)
    finally:
        gate.set()
    # The environment is frozen: what is stored now is all there will be until another invocation.
    assert sandbox.frozen
    messages, open_reservations = _state(world, thread_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content[0]["text"].split() == REPLY.split()  # the whole answer, not what the client saw
    assert open_reservations == []
    stores = world["stores"]
    since = messages[0].created_at
    (event,) = [e for e in stores.ledger.usage_events(messages[0].account_id, since, since + 3_600_000)
                if e.thread_id == thread_id]
    assert event.status == "ok" and event.output_tokens == len(REPLY.split()) and event.cost_micros > 0
    # The next request thaws it and sees a usable thread.
    r = httpx.get(f"{function.url}/v1/threads/{thread_id}/messages", headers={"x-api-key": user_key}, timeout=WAIT_S)
    assert r.status_code == 200 and [m["role"] for m in r.json()["data"]] == ["user", "assistant"]


def test_without_the_hold_a_client_that_leaves_mid_turn_gets_its_turn_frozen_unsettled(
        tools, deployed, world, fakes, tmp_path):
    """The counterfactual: the hold's registration is refused (as after init), everything else equal."""
    lwa, emulator = tools
    with running_stream_function(deployed, world["env"], lwa=lwa, cargo_lambda=emulator, workdir=tmp_path,
                                 refuse_extensions=frozenset({HOLD})) as function:
        r = httpx.post(function.url + "/v1/keys", json={"name": "no-hold"}, headers={"x-api-key": MASTER_KEY},
                       timeout=WAIT_S)
        key = r.json()["secret"]
        thread_id, gate = _leave_mid_turn(function, key, fakes[0])
        try:
            _wait(lambda: _runtime_done_after_broken_upload(function.sandbox), "LWA never gave up", function.sandbox)
            assert function.sandbox.frozen  # nothing else held the invocation
            gate.set()  # the model finishes its answer, to a process that cannot read it
            messages, open_reservations = _state(world, thread_id)
            assert [m.role for m in messages] == ["user"]
            assert len(open_reservations) == 1  # left to the sweeper, which bills the estimate
        finally:
            gate.set()
        assert "invocation hold not registered" in function.log("app")
