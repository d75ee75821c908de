"""The reference chat app (examples/chat) in real headless Chromium against a real local-mode
gateway (issue #12): sign up, a reply streamed token by token, a tool call shown as it happens,
past threads, search over the user's history, "spent $x of $y", the message at the cap (402),
untrusted text rendered as text, and the master key never reaching the browser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from examples.chat.app import create_chat_app
from tests.browser.conftest import screenshot
from tests.fakes.servers import bound_socket, serve_asgi

XSS = '<img src=x onerror="document.title=\'pwned\'">'
WORD_DELAY_MS = 60  # the offline model streams one word per delay: slow enough to watch it grow


class Chat:
    def __init__(self, url: str, gw: Any, data_dir: Path):
        self.url, self.gw, self.data_dir = url, gw, data_dir


@pytest.fixture
def chat(gateway_factory, tmp_path: Path) -> Iterator[Chat]:
    gw = gateway_factory(allow_private_webhooks=True, local_model_word_delay_ms=WORD_DELAY_MS)
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_chat_app(gw.url, gw.admin_key, data_dir=tmp_path / "chat", public_url=url, cap_usd=0.5)
    with serve_asgi(app, sock=sock):
        yield Chat(url, gw, tmp_path / "chat")


def sign_up(page, chat: Chat, username: str) -> None:
    page.goto(chat.url + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign up").click()
    page.get_by_text("Spent $0.00 of $0.50").wait_for()


def send(page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def watch_for_secret(page, secret: str) -> list[str]:
    """URLs of answers (pages, scripts, API JSON and SSE bodies) that carried `secret`."""
    leaks: list[str] = []

    def check(response: Any) -> None:
        try:
            body = response.body()
        except Exception:  # a redirect or an aborted request has no body to read
            return
        if secret.encode() in body or secret in json.dumps(dict(response.headers)):
            leaks.append(response.url)

    page.on("response", check)
    return leaks


def watch_stream(page) -> None:
    """Record every text the newest assistant bubble shows, as the DOM changes."""
    page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(() => {
            const bubbles = document.querySelectorAll('#conversation .msg.assistant');
            if (bubbles.length) window.__seen.push(bubbles[bubbles.length - 1].textContent);
        }).observe(document.getElementById('conversation'), {subtree: true, childList: true, characterData: true});
    }""")


def test_sign_up_stream_tools_threads_search_and_the_cap(page, chat):
    leaks = watch_for_secret(page, chat.gw.admin_key)
    control = watch_for_secret(page, '"username":"alice"')  # the watch does see answer bodies
    sign_up(page, chat, "alice")

    # A reply streamed token by token: the bubble shows growing partial texts before the whole.
    watch_stream(page)
    send(page, "How do refunds work at your store?")
    final = page.locator("#conversation .msg.assistant").last
    page.get_by_text("Echo: How do refunds work at your store?").wait_for()
    seen = page.evaluate("window.__seen")
    partial = [t for t in dict.fromkeys(seen) if t and t != final.text_content()]
    assert len(partial) >= 3, seen
    assert all("Echo: How do refunds work at your store?".startswith(t) for t in partial)
    page.wait_for_function("!document.getElementById('spend').textContent.startsWith('Spent $0.00 ')")
    assert re.fullmatch(r"Spent \$0\.0\d+ of \$0\.50", page.locator("#spend").inner_text())  # spent moved

    # A tool call is shown while it runs, then with its result.
    send(page, 'order_status {"order_id": "A-1001"}')
    tool = page.locator("#conversation .tool[data-tool='order_status']")
    tool.wait_for()
    tool.locator("pre.result").wait_for()
    assert json.loads(tool.locator("code").inner_text()) == {"order_id": "A-1001"}  # its input, as streamed
    assert json.loads(tool.locator("pre.result").inner_text()) == {"order_id": "A-1001", "status": "shipped"}
    page.get_by_text("Tool results:").wait_for()
    screenshot(page, "chat-conversation")

    # Untrusted text stays text.
    send(page, f"my name is {XSS}")
    page.get_by_text(f"Echo: my name is {XSS}").wait_for()
    assert page.locator("#conversation img").count() == 0 and page.title() != "pwned"

    # Past threads: a new chat, then both listed; the first opens with its history.
    page.get_by_role("button", name="New chat").click()
    send(page, "a second conversation")
    page.get_by_text("Echo: a second conversation").wait_for()
    threads = page.locator("#threads button")
    threads.filter(has_text="a second conversation").wait_for()  # titled after its first line
    assert set(threads.all_inner_texts()) == {"How do refunds work at your store?", "a second conversation"}
    page.get_by_role("button", name="How do refunds work at your store?").click()
    page.locator("#conversation .tool[data-tool='order_status']").wait_for()

    # Search finds the earlier message (semantic search over this user's own history).
    page.get_by_label("Search your history").fill("money back for a purchase")
    page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator("#search-results button")
    hits.first.wait_for()
    assert any("refunds" in text for text in hits.all_inner_texts())
    screenshot(page, "chat-search")

    # At the cap: the key's cap is lowered below what it has spent (the operator can), and the
    # next message gets a clear message instead of an answer.
    with chat.gw.admin() as admin:
        (key,) = admin.get("/v1/keys", params={"end_user_id": "chat_alice"}).json()["keys"]
        assert admin.patch(f"/v1/keys/{key['id']}", json={"max_spend_usd": 0.000001}).status_code == 200
    send(page, "one more question")
    cap = page.get_by_role("alert").filter(has_text="spending limit")
    cap.wait_for()
    assert "You have reached your spending limit" in cap.inner_text() and "of your $0.000001" in cap.inner_text()
    screenshot(page, "chat-cap")

    assert leaks == [] and control  # the master key never reached the browser
    stored = json.loads((chat.data_dir / "chat-app.json").read_text())
    assert oct((chat.data_dir / "chat-app.json").stat().st_mode & 0o777) == "0o600"
    assert stored["users"]["alice"]["key"].startswith("qlk_live_") and "correct horse" not in json.dumps(stored)
    assert page.problems.errors == []


def test_one_user_never_sees_another_users_threads_or_history(page, chat, browser):
    sign_up(page, chat, "bob")
    send(page, "bob's secret plan")
    page.get_by_text("Echo: bob's secret plan").wait_for()

    other = browser.new_context().new_page()
    sign_up(other, chat, "carol")
    other.locator("#threads button").first.wait_for()
    other.get_by_label("Search your history").fill("secret plan")
    other.get_by_role("button", name="Search", exact=True).click()
    other.get_by_text("Nothing found.").wait_for()
    assert other.locator("#threads button").count() == 1  # only her own first chat
    bob_thread = page.locator("#threads button").first.get_attribute("data-thread-id")
    answer = other.request.get(f"{chat.url}/api/threads/{bob_thread}/messages")
    assert answer.status == 404  # bound keys: another end user's thread does not exist
    other.context.close()
