"""The operator console in real headless Chromium against a real gateway (issue #12): sign in,
charts with the right totals for seeded usage, keys (create, see, change cap, revoke), a thread
(tool calls folded, per-turn cost, untrusted text escaped), an end user (threads, search), tools
(bad schema shown inline, register, delivery attempts). Screenshots: build/browser-artifacts/."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import pytest

from tests.browser.conftest import screenshot
from tests.fakes.webhook_receivers import running_webhook_receiver

LOCAL = "threadgate-local"
XSS = '<img src=x onerror="document.title=\'pwned\'">'
SCHEMA = {"type": "object", "properties": {"account_id": {"type": "string"}}}


@pytest.fixture
def receiver() -> Iterator[Any]:
    with running_webhook_receiver(hang_s=10) as running:
        yield running


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01)


def turn(gw, key: dict, thread_id: str, text: str, **body: Any):
    with gw.client(key["secret"]) as c:
        return c.post(f"/v1/threads/{thread_id}/messages", json={"model": LOCAL, "max_tokens": 200, "content": text, **body})


def new_thread(gw, key: dict) -> str:
    with gw.client(key["secret"]) as c:
        return c.post("/v1/threads", json={}).json()["id"]


def seed(gw) -> dict[str, Any]:
    """Two end users' turns, a backend key's turn, a 402 and a 400: what the overview must sum."""
    alice = gw.mint(name="alice", end_user_id="u_alice")
    bob = gw.mint(name="bob", end_user_id="u_bob")
    broke = gw.mint(name="broke", max_spend_usd=0.000001, end_user_id="u_broke")
    costs = {"u_alice": 0, "u_bob": 0}
    a_thread, b_thread = new_thread(gw, alice), new_thread(gw, bob)
    for key, thread, text, user in [(alice, a_thread, "How do refunds work?", "u_alice"),
                                    (alice, a_thread, "And how long do they take?", "u_alice"),
                                    (bob, b_thread, "What are your opening hours?", "u_bob")]:
        r = turn(gw, key, thread, text)
        assert r.status_code == 200, r.text
        costs[user] += int(r.headers["x-qlaud-cost-micros"])
    assert turn(gw, broke, new_thread(gw, broke), "hi").status_code == 402
    with gw.client(alice["secret"]) as c:
        assert c.post(f"/v1/threads/{a_thread}/messages", json={"model": LOCAL, "content": "x"}).status_code == 400
    return {"alice": alice, "bob": bob, "a_thread": a_thread, "costs": costs}


def sign_in(page, gw) -> None:
    page.goto(gw.url + "/console")  # redirected to /console/
    assert page.url == gw.url + "/console/"
    page.get_by_label("Admin key").fill(gw.admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#month-spend").wait_for()


def micros(locator) -> int:
    return int(locator.get_attribute("data-micros"))


def chart_sums(page, figure_id: str) -> list[float]:
    """Sum of each dataset of the Chart.js chart drawn in that figure (what the picture shows)."""
    return page.evaluate(
        """(id) => { const c = Chart.getChart(document.querySelector('#' + id + ' canvas'));
                    return c.data.datasets.map(d => d.data.reduce((a, b) => a + b, 0)); }""", figure_id)


def test_sign_in_then_overview_charts_show_the_seeded_totals(page, gw):
    seeded = seed(gw)
    page.goto(gw.url + "/console/")
    page.get_by_label("Admin key").fill(seeded["alice"]["secret"])  # a standard key is refused
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That key is not an admin key.").wait_for()
    assert page.evaluate("sessionStorage.length") == 0
    sign_in(page, gw)
    assert page.evaluate("Object.keys(localStorage).length + document.cookie.length") == 0  # session storage only

    total = sum(seeded["costs"].values())
    assert micros(page.locator("#cost-total [data-micros]")) == total
    assert micros(page.locator("#month-spend .value [data-micros]")) == total
    model_row = page.locator(f"#chart-cost-by-model tr[data-model='{LOCAL}'] [data-micros]")
    assert micros(model_row) == total
    assert chart_sums(page, "chart-cost-by-model") == [pytest.approx(total / 1e6)]

    users = page.locator("#chart-top-end-users tbody tr")
    assert users.count() == 2
    assert [users.nth(i).get_attribute("data-end-user") for i in range(2)] == sorted(
        seeded["costs"], key=lambda u: -seeded["costs"][u])
    for user, cost in seeded["costs"].items():
        assert micros(page.locator(f"#chart-top-end-users tr[data-end-user='{user}'] [data-micros]")) == cost
    assert sorted(chart_sums(page, "chart-top-end-users")) == [pytest.approx(total / 1e6)]

    # 3 answered turns + the 402 + the 400
    page.locator("#requests-total").get_by_text("5").wait_for()
    assert page.locator("#requests-total td").all_inner_texts() == ["Total", "5", "1", "1"]
    assert chart_sums(page, "chart-requests") == [5, 1, 1]
    screenshot(page, "console-overview")
    assert page.problems.errors == []


def test_keys_create_shows_secret_once_lists_it_changes_cap_and_revokes(page, gw):
    sign_in(page, gw)
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name").fill("support-bot")
    page.get_by_label("Cap in USD").fill("5")
    page.get_by_label("End user id").fill("u_support")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#key-secret input").input_value()
    assert re.fullmatch(r"qlk_live_[0-9a-f]{64}", secret)
    row = page.locator("#keys-list tr", has_text="support-bot")
    row.wait_for()
    assert "u_support" in row.inner_text() and "active" in row.inner_text()
    assert micros(row.locator("[data-micros]").nth(1)) == 5_000_000  # spent / cap: the cap
    with gw.client(secret) as c:  # the secret shown is the key's
        assert c.get("/v1/key").json()["name"] == "support-bot"

    page.get_by_label("Search keys").fill("support")
    page.get_by_role("button", name="Search").click()
    page.locator("#keys-range").get_by_text("1–1 of 1").wait_for()

    row.get_by_role("button", name="Change cap of support-bot").click()
    row.get_by_label("New cap in USD (empty: unlimited)").fill("7.5")
    row.get_by_role("button", name="Save").click()
    page.locator("#keys-list tr", has_text="support-bot").locator("[data-micros='7500000']").wait_for()

    screenshot(page, "console-keys")
    page.locator("#keys-list tr", has_text="support-bot").get_by_role("button", name="Revoke support-bot").click()
    dialog = page.get_by_role("dialog")
    assert "can never be re-enabled" in dialog.inner_text()
    dialog.get_by_role("button", name="Revoke key").click()
    page.locator("#keys-list tr", has_text="support-bot").locator(".state-revoked").wait_for()
    with gw.client(secret) as c:
        assert c.get("/v1/key").status_code == 401
    assert page.problems.errors == []


def test_thread_renders_tool_calls_folded_turn_costs_and_untrusted_text_as_text(page, gw, receiver):
    with gw.admin() as admin:
        tool = admin.post("/v1/tools", json={"name": "lookup_account", "description": "Look up an account",
                                             "input_schema": SCHEMA, "webhook_url": receiver.url("/echo")}).json()
    receiver.secrets[tool["id"]] = tool["secret"]
    key = gw.mint(name="carol", end_user_id="u_carol")
    thread = new_thread(gw, key)
    xss = turn(gw, key, thread, f"my name is {XSS}")
    tooled = turn(gw, key, thread, 'lookup_account {"account_id": "acct_42"}', tools=[tool["id"]])
    assert xss.status_code == tooled.status_code == 200, tooled.text

    sign_in(page, gw)
    page.goto(f"{gw.url}/console/#/threads/{thread}")
    conversation = page.get_by_role("region", name="Conversation")
    conversation.locator("article").first.wait_for()
    assert conversation.get_by_text(XSS).count() == 2  # the user's message and the model's echo, as text
    assert conversation.locator("img").count() == 0 and page.title() != "pwned"

    call = conversation.locator("details.tool-call")
    result = conversation.locator("details.tool-result")
    assert call.count() == 1 and result.count() == 1
    assert not call.evaluate("d => d.open") and not call.locator("pre").is_visible()  # folded
    call.locator("summary").click()
    assert json.loads(call.locator("pre").inner_text()) == {"account_id": "acct_42"}
    result.locator("summary").focus()
    page.keyboard.press("Enter")  # keyboard opens it too
    assert "acct_42" in result.locator("pre").inner_text()

    costs = conversation.locator(".cost")
    assert costs.count() == 2  # one per turn, under its last message
    for response, cost in zip((xss, tooled), (costs.nth(0), costs.nth(1))):
        assert cost.get_attribute("data-request-id") == response.headers["request-id"]
        assert micros(cost.locator("[data-micros]")) == int(response.headers["x-qlaud-cost-micros"])
    assert "2 model calls" in costs.nth(1).inner_text()
    screenshot(page, "console-thread")

    page.get_by_role("link", name="u_carol").first.click()
    page.locator("#chart-end-user-spend").wait_for()
    page.locator(f"tr[data-thread-id='{thread}']").wait_for()
    page.get_by_label("Search u_carol’s history").fill("my name is")
    page.get_by_role("button", name="Search", exact=True).click()
    hit = page.locator("#search-results li").first
    hit.wait_for()
    assert XSS in hit.inner_text() and page.locator("#search-results img").count() == 0
    screenshot(page, "console-end-user")
    assert page.problems.errors == []


def test_tools_register_shows_bad_schema_inline_then_lists_and_shows_deliveries(page, gw, receiver):
    sign_in(page, gw)
    page.get_by_role("link", name="Tools").click()
    page.get_by_label("Name", exact=True).fill("lookup_account")
    page.get_by_label("Description").fill("Look up an account")
    page.get_by_label("Webhook URL").fill(receiver.url("/flaky/1"))
    schema = page.get_by_label("Input schema (JSON Schema)")

    schema.fill('{"type": "object", "properties": ')  # not JSON: said while typing
    error = page.locator("#tool-schema-error")
    assert error.inner_text().startswith("Not valid JSON")
    assert schema.get_attribute("aria-invalid") == "true"

    schema.fill('{"type": "object", "properties": {"n": {"type": "integr"}}}')  # JSON, but not a valid schema
    assert error.is_hidden()
    page.get_by_role("button", name="Register tool").click()
    error.get_by_text("input_schema: not a valid JSON Schema").wait_for()
    assert schema.evaluate("el => el === document.activeElement")
    with gw.admin() as admin:
        assert admin.get("/v1/tools").json()["data"] == []  # nothing was registered
    screenshot(page, "console-tools-bad-schema")

    schema.fill(json.dumps(SCHEMA))
    page.get_by_role("button", name="Register tool").click()
    secret = page.locator("#tool-secret input").input_value()
    assert secret.startswith("wsk_")
    row = page.locator("#tools-list tr", has_text="lookup_account").first
    row.wait_for()
    tool_id = row.get_attribute("data-tool-id")
    receiver.secrets[tool_id] = secret

    key = gw.mint(name="dave")
    assert turn(gw, key, new_thread(gw, key), 'lookup_account {"account_id": "a1"}', tools=[tool_id]).status_code == 200
    row.get_by_role("button", name="Deliveries of lookup_account").click()
    delivery = page.locator("tr.deliveries tr[data-tool-use-id]").first
    delivery.wait_for()
    cells = delivery.locator("td").all_inner_texts()
    assert cells[2] == "2" and cells[3] == "ok" and cells[4] == "200"
    assert re.fullmatch(r"#1 503 in \d+ ms, #2 200 in \d+ ms", cells[5])
    screenshot(page, "console-tools")

    row.get_by_role("button", name="Delete lookup_account").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete tool").click()
    page.get_by_text("No tools registered.").wait_for()
    assert page.problems.errors == []
