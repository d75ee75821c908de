"""/console is served by the gateway itself with a strict CSP and no inline code (issue #12);
the browser behaviour is in tests/browser/test_console.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from threadgate.api.routes.console import CONSOLE_DIR

CONSOLE_FILES = sorted(p for p in CONSOLE_DIR.rglob("*") if p.suffix in (".html", ".js", ".css"))


def test_console_redirects_relative_then_serves_index_with_security_headers(gateway):
    with gateway.client() as c:
        r = c.get("/console")
        assert r.status_code == 308 and r.headers["location"] == "console/"  # keeps a stage prefix
        page = c.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_assets_have_their_types_etags_and_unknown_paths_404(gateway):
    with gateway.client() as c:
        js = c.get("/console/js/app.js")
        chart = c.get("/console/vendor/chart.umd.min.js")
        again = c.get("/console/js/app.js", headers={"if-none-match": js.headers["etag"]})
        missing = [c.get(p) for p in ("/console/nope.js", "/console/../threadgate.db", "/console/js/../../api/app.py")]
    assert js.status_code == 200 and js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert chart.status_code == 200 and len(chart.content) > 100_000
    assert again.status_code == 304 and again.headers["content-security-policy"]
    assert all(r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" for r in missing)


def test_console_needs_no_key_to_load_but_every_api_call_does(gateway):
    with gateway.client() as c:
        assert c.get("/console/").status_code == 200
        assert c.get("/v1/usage").status_code == 401


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "style" or "style" in names or any(n.startswith("on") for n in names):
            self.problems.append(f"inline style/handler in <{tag}>")
        if tag == "script" and not names.get("src"):
            self.problems.append("inline <script>")
        for attr in ("src", "href"):
            if re.match(r"^(https?:)?//", names.get(attr) or ""):
                self.problems.append(f"{attr} from another origin: {names[attr]}")


def test_no_inline_code_no_html_injection_sinks_no_remote_assets():
    html = (CONSOLE_DIR / "index.html").read_text()
    markup = _Markup()
    markup.feed(html)
    assert markup.problems == []
    for path in CONSOLE_FILES:
        if path.suffix == ".js" and "vendor" not in path.parts:
            source = path.read_text()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                assert sink not in source, f"{path.name} uses {sink}"
            assert not re.search(r"https?://(?!app\.example)", source), f"{path.name} names a remote URL"
