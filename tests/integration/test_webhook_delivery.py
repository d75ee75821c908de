"""Webhook delivery over real HTTP against scripted receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

import threadgate
from tests.fakes.servers import serve_asgi
from tests.fakes.webhook_receivers import ERROR_PAGE, running_webhook_receiver, resolver_for
from threadgate.domain.models import Tool
from threadgate.webhooks import check_webhook_url, deliver, new_webhook_client, prepare, verify_request

SECRET = "wsk_" + "ab" * 32
FAST = 0.01  # backoff base in tests: the policy is the same, only shorter


@pytest.fixture(scope="module")
def receiver():
    with running_webhook_receiver(SECRET) as running:
        yield running


def make_tool(url: str, *, timeout_ms: int = 5000, secret: str = SECRET) -> Tool:
    return Tool(
        id="tool_" + "0" * 32, account_id="acct_1", name="lookup_account", description="Look up an account",
        input_schema={"type": "object"}, webhook_url=url, timeout_ms=timeout_ms, secret=secret, created_at=0,
    )


_ids = iter(range(10**6))


def new_tool_use_id() -> str:
    return f"toolu_{next(_ids):06d}"


class RecordingSleep:
    """Stands in for asyncio.sleep: records the backoff waits instead of waiting them."""

    def __init__(self):
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def run_delivery(tool: Tool, *, client_kwargs: dict | None = None, **overrides):
    tool_use_id = overrides.pop("tool_use_id", None) or new_tool_use_id()
    kwargs = dict(
        tool_use_id=tool_use_id, input={"account_id": "acct_42"}, thread_id="thr_1", end_user_id="user_9",
        request_id="req_1", allow_private=True, backoff_base_s=FAST,
    )
    kwargs.update(overrides)

    async def go():
        async with new_webhook_client(**(client_kwargs or {})) as client:
            return await deliver(tool, client=client, **kwargs)

    return asyncio.run(go()), tool_use_id


def test_delivery_sends_the_documented_body_and_signed_headers(receiver):
    result, tool_use_id = run_delivery(make_tool(receiver.url("/echo")))

    assert (result.output, result.is_error, result.attempts, result.status, result.reason) == (
        {"account_id": "acct_42"}, False, 1, 200, None,
    )
    assert result.output_text == '{"account_id": "acct_42"}'
    [delivery] = receiver.deliveries_for(tool_use_id)
    assert delivery.json == {
        "tool_id": "tool_" + "0" * 32, "tool_use_id": tool_use_id, "name": "lookup_account",
        "input": {"account_id": "acct_42"}, "thread_id": "thr_1", "end_user_id": "user_9", "request_id": "req_1",
    }
    headers = delivery.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"threadgate/{threadgate.__version__}"
    assert headers["x-qlaud-delivery"] == tool_use_id
    assert headers["x-qlaud-attempt"] == "1"
    assert abs(int(headers["x-qlaud-timestamp"]) - time.time()) < 60  # Unix seconds, not ms
    assert verify_request(SECRET, delivery.body, headers)  # over the exact raw bytes received
    assert delivery.signature_valid
    assert headers["host"] == receiver.base_url.removeprefix("http://")


def test_503_twice_then_success_takes_exactly_three_deliveries_with_one_delivery_id(receiver):
    sleep = RecordingSleep()
    result, tool_use_id = run_delivery(make_tool(receiver.url("/flaky/2")), sleep=sleep)

    assert (result.output, result.is_error, result.attempts, result.status) == ({"account_id": "acct_42"}, False, 3, 200)
    deliveries = receiver.deliveries_for(tool_use_id)
    assert [d.attempt for d in deliveries] == [1, 2, 3]
    assert {d.delivery_id for d in deliveries} == {tool_use_id}
    assert len({d.body for d in deliveries}) == 1  # the same bytes every time...
    assert all(d.signature_valid for d in deliveries)  # ...signed afresh each attempt
    assert len(sleep.waits) == 2 and sleep.waits[0] < sleep.waits[1]


def test_always_500_gives_up_after_four_deliveries_without_leaking_the_error_page(receiver):
    sleep = RecordingSleep()
    result, tool_use_id = run_delivery(make_tool(receiver.url("/status/500")), sleep=sleep, backoff_base_s=0.5)

    assert result.is_error and result.attempts == 4 and result.status == 500
    assert result.reason == result.output_text == "webhook failed: HTTP 500 after 4 attempts"
    assert "hunter2" not in result.output_text and "hunter2" in ERROR_PAGE
    assert [d.attempt for d in receiver.deliveries_for(tool_use_id)] == [1, 2, 3, 4]
    # About 0.5 s, 1 s, 2 s, each plus at most 0.25 s of jitter.
    for wait, base in zip(sleep.waits, [0.5, 1.0, 2.0], strict=True):
        assert base <= wait <= base + 0.25


def attempt_once(tool: Tool, number: int, *, last: bool = False):
    """What the queue worker does per receive: one prepared attempt, numbered by the receive count."""
    tool_use_id = new_tool_use_id()
    delivery = prepare(tool, tool_use_id=tool_use_id, input={"account_id": "acct_42"}, thread_id="thr_1",
                       end_user_id="user_9", request_id="req_1", allow_private=True)

    async def go():
        async with new_webhook_client() as client:
            return await delivery.attempt(number, last=last, client=client)

    return asyncio.run(go()), tool_use_id


def test_a_queue_worker_makes_one_numbered_attempt_and_learns_whether_to_retry(receiver):
    result, tool_use_id = attempt_once(make_tool(receiver.url("/status/503")), 3)
    assert (result.output_text, result.attempts, result.retryable) == ("webhook failed: HTTP 503 after 3 attempts", 3, True)
    assert [d.attempt for d in receiver.deliveries_for(tool_use_id)] == [3]

    final, _ = attempt_once(make_tool(receiver.url("/status/400")), 2)
    assert (final.output_text, final.attempts, final.retryable) == ("webhook failed: HTTP 400", 2, False)

    refused, _ = attempt_once(make_tool(receiver.url("/echo"), secret=""), 2)
    assert (refused.output_text, refused.attempts, refused.retryable) == ("webhook refused: tool unavailable", 1, False)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_on_429_and_503_is_read_in_seconds_or_as_an_http_date(receiver, status):
    receiver.respond(f"/busy-{status}", status=status, body="slow down", headers={"retry-after": "7"})
    in_seconds, _ = attempt_once(make_tool(receiver.url(f"/busy-{status}")), 1)
    assert (in_seconds.retryable, in_seconds.retry_after_s) == (True, 7.0)

    soon = email.utils.formatdate(time.time() + 120, usegmt=True)
    receiver.respond(f"/busy-date-{status}", status=status, body="slow down", headers={"retry-after": soon})
    dated, _ = attempt_once(make_tool(receiver.url(f"/busy-date-{status}")), 1)
    assert 100 <= dated.retry_after_s <= 121

    receiver.respond(f"/busy-junk-{status}", status=status, body="slow down", headers={"retry-after": "soon-ish"})
    junk, _ = attempt_once(make_tool(receiver.url(f"/busy-junk-{status}")), 1)
    assert (junk.retryable, junk.retry_after_s) == (True, None)


def test_retry_after_on_a_500_is_not_a_promise(receiver):
    receiver.respond("/busy-500", status=500, body="oops", headers={"retry-after": "7"})
    result, _ = attempt_once(make_tool(receiver.url("/busy-500")), 1)
    assert (result.retryable, result.retry_after_s) == (True, None)


def test_429_is_retried_like_a_5xx(receiver):
    result, tool_use_id = run_delivery(make_tool(receiver.url("/status/429")))
    assert result.reason == "webhook failed: HTTP 429 after 4 attempts"
    assert len(receiver.deliveries_for(tool_use_id)) == 4


@pytest.mark.parametrize("path, status", [("/status/400", 400), ("/status/404", 404), ("/redirect", 302)])
def test_other_4xx_and_redirects_are_final_after_one_delivery(receiver, path, status):
    sleep = RecordingSleep()
    result, tool_use_id = run_delivery(make_tool(receiver.url(path)), sleep=sleep)

    assert result.is_error and result.attempts == 1 and result.status == status
    assert result.output_text == f"webhook failed: HTTP {status}"
    assert sleep.waits == []
    assert [d.path for d in receiver.deliveries_for(tool_use_id)] == [path]  # the redirect was not followed


def test_a_receiver_slower_than_timeout_ms_times_out_on_every_attempt(receiver):
    result, tool_use_id = run_delivery(make_tool(receiver.url("/hang"), timeout_ms=200))

    assert result.is_error and result.attempts == 4 and result.status is None
    assert result.output_text == "webhook failed: timeout after 4 attempts"
    assert len(receiver.deliveries_for(tool_use_id)) == 4


def test_a_receiver_within_timeout_ms_answers(receiver):
    result, _ = run_delivery(make_tool(receiver.url("/slow/0.2"), timeout_ms=5000))
    assert not result.is_error and result.attempts == 1


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    result, _ = run_delivery(make_tool(f"http://127.0.0.1:{port}/echo"))
    assert result.is_error and result.attempts == 4
    assert result.output_text == "webhook failed: connection error after 4 attempts"


def test_a_non_json_answer_is_text_output(receiver):
    result, _ = run_delivery(make_tool(receiver.url("/text")))
    assert (result.output, result.output_text, result.is_error) == ("plain text answer", "plain text answer", False)


def test_json_without_the_output_envelope_is_passed_as_its_text(receiver):
    receiver.respond("/bare-json", json_body={"plan": "pro"})
    result, _ = run_delivery(make_tool(receiver.url("/bare-json")))
    assert (result.output, result.is_error) == ('{"plan": "pro"}', False)


def test_string_output_is_kept_as_is_and_tool_errors_reach_the_model(receiver):
    receiver.respond("/string-output", json_body={"output": "Ada is on the pro plan", "is_error": False})
    result, _ = run_delivery(make_tool(receiver.url("/string-output")))
    assert (result.output_text, result.is_error) == ("Ada is on the pro plan", False)

    result, _ = run_delivery(make_tool(receiver.url("/tool-error")))
    assert (result.output_text, result.is_error, result.attempts) == ("lookup failed: no such account", True, 1)


@pytest.mark.parametrize("path", ["/big", "/big-declared"])
def test_an_answer_over_1_mib_is_cut_to_an_error(receiver, path):
    result, tool_use_id = run_delivery(make_tool(receiver.url(path)))
    assert result.is_error and result.attempts == 1 and result.status == 200
    assert result.output_text == "webhook failed: response too large"
    assert len(receiver.deliveries_for(tool_use_id)) == 1


def test_a_host_resolving_to_a_private_address_is_refused_at_delivery(receiver):
    evil = resolver_for({"evil.example": ["10.0.0.1"]})
    result, tool_use_id = run_delivery(make_tool("https://evil.example/echo"), allow_private=False, resolver=evil)

    assert (result.is_error, result.attempts, result.status) == (True, 0, None)
    assert result.output_text == "webhook refused: address not allowed"
    assert receiver.deliveries_for(tool_use_id) == []


def test_dns_rebinding_after_registration_is_caught_at_delivery(receiver):
    port = int(receiver.base_url.rsplit(":", 1)[1])
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public when registered, loopback when called

    def rebinding(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    url = f"https://rebind.example:{port}/echo"
    check_webhook_url(url, allow_private=False, resolver=rebinding)
    result, tool_use_id = run_delivery(make_tool(url), allow_private=False, resolver=rebinding)

    assert result.output_text == "webhook refused: address not allowed"
    assert receiver.deliveries_for(tool_use_id) == []


def test_a_name_that_stops_resolving_is_retried_then_reported(receiver, caplog):
    nothing = resolver_for({})
    tool = make_tool("https://gone.example/echo?token=receiver-own-token")
    result, _ = run_delivery(tool, allow_private=False, resolver=nothing)

    assert (result.output_text, result.attempts) == ("webhook failed: DNS lookup failed after 4 attempts", 4)
    [record] = [r for r in caplog.records if r.getMessage().startswith("webhook delivery failed")]
    assert record.reason == result.reason
    # The line an operator reads (make dev's log format prints the message only) says which tool,
    # where and why; the URL's query (it may carry the receiver's own token) stays out.
    line = record.getMessage()
    assert "lookup_account" in line and tool.id in line and "https://gone.example/echo" in line, line
    assert "DNS lookup failed" in line and "4 attempts" in line, line
    assert "receiver-own-token" not in repr(record.__dict__) and "token" not in line
    assert tool.secret not in repr(record.__dict__)


def test_plain_http_registered_elsewhere_is_refused_where_private_webhooks_are_not_allowed(receiver):
    result, tool_use_id = run_delivery(make_tool(receiver.url("/echo")), allow_private=False)
    assert (result.output_text, result.attempts) == ("webhook refused: URL not allowed", 0)
    assert receiver.deliveries_for(tool_use_id) == []


def test_delivery_connects_to_the_vetted_address_but_names_the_host(receiver):
    port = receiver.base_url.rsplit(":", 1)[1]
    local = resolver_for({"receiver.test": ["127.0.0.1"]})
    result, tool_use_id = run_delivery(make_tool(f"http://receiver.test:{port}/echo"), resolver=local)

    assert not result.is_error
    assert receiver.deliveries_for(tool_use_id)[0].headers["host"] == f"receiver.test:{port}"


def test_cookies_set_by_one_receiver_are_never_sent_back(receiver):
    receiver.respond("/cookie", json_body={"output": "ok"}, headers={"set-cookie": "session=tenant-a; Path=/"})

    async def go():
        async with new_webhook_client() as client:
            for tool_use_id in ("toolu_cookie_1", "toolu_cookie_2"):
                await deliver(
                    make_tool(receiver.url("/cookie")), tool_use_id=tool_use_id, input={}, thread_id=None,
                    end_user_id=None, request_id="req", client=client, allow_private=True,
                )
            return len(client.cookies)

    assert asyncio.run(go()) == 0
    assert "cookie" not in receiver.deliveries_for("toolu_cookie_2")[0].headers


# --- TLS: connecting to a vetted IP must still check the certificate against the hostname -------


@contextlib.contextmanager
def serve_tls(app, cert_path: Path, key_path: Path):
    """Like tests/fakes/servers.serve_asgi, over TLS (which that helper does not offer)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, ssl_certfile=str(cert_path), ssl_keyfile=str(key_path),
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "TLS server did not start"
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_https_delivery_to_a_vetted_ip_verifies_the_certificate_of_the_hostname(receiver, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("receiver.test")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(tmp_path / "cert.pem", append=True)
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    local = resolver_for({"receiver.test": ["127.0.0.1"], "impostor.test": ["127.0.0.1"]})

    with serve_tls(receiver.app, tmp_path / "cert.pem", tmp_path / "key.pem") as port:
        good, tool_use_id = run_delivery(
            make_tool(f"https://receiver.test:{port}/echo"), resolver=local, client_kwargs={"verify": trust}
        )
        wrong, _ = run_delivery(
            make_tool(f"https://impostor.test:{port}/echo"), resolver=local, client_kwargs={"verify": trust},
            max_attempts=1,
        )

    assert (good.is_error, good.output) == (False, {"account_id": "acct_42"})
    assert receiver.deliveries_for(tool_use_id)[0].headers["host"] == f"receiver.test:{port}"
    assert (wrong.is_error, wrong.output_text) == (True, "webhook failed: connection error after 1 attempt")


# --- the fake receiver and the example receiver, checked with the real client and helper -----------


def test_the_fake_receiver_rejects_a_bad_signature_like_a_real_one(receiver):
    body = json.dumps({"tool_id": "tool_x", "input": {}}).encode()
    answer = httpx.post(
        receiver.url("/echo"), content=body,
        headers={"X-Qlaud-Timestamp": str(int(time.time())), "X-Qlaud-Signature": "0" * 64, "X-Qlaud-Delivery": "d1"},
    )
    assert answer.status_code == 401
    assert receiver.deliveries_for("d1")[0].signature_valid is False


def test_the_example_receiver_answers_verified_deliveries_once_per_delivery_id():
    from examples import webhook_receiver as example

    app = example.create_app(SECRET)
    with serve_asgi(app) as base_url:
        tool = make_tool(base_url + "/tools/lookup_account")
        first, tool_use_id = run_delivery(tool)
        retry, _ = run_delivery(tool, tool_use_id=tool_use_id)  # a retry carries the same delivery id
        unknown, _ = run_delivery(tool, input={"account_id": "acct_nope"})
        forged, _ = run_delivery(make_tool(tool.webhook_url, secret="wsk_" + "cd" * 32))

    assert (first.output, first.is_error) == ({"plan": "pro", "email": "ada@example.com"}, False)
    assert retry.output == first.output
    assert app.state.calls == 2  # the retry was answered from memory; the forged call never ran
    assert (unknown.output_text, unknown.is_error) == ("no such account", True)
    assert (forged.output_text, forged.is_error) == ("webhook failed: HTTP 401", True)
