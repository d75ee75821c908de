"""Real headless Chromium for the browser tests (Debian's `chromium`, driven by Playwright with
the system browser: Playwright's own browser download is neither needed nor possible offline).

Skips with the reason when no Chromium (or no Playwright) is installed; `make test` installs
Debian's package when it runs as root, as CI does. Screenshots go to build/browser-artifacts/
(THREADGATE_ARTIFACTS overrides).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("THREADGATE_ARTIFACTS", ROOT / "build" / "browser-artifacts"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    found = os.environ.get("THREADGATE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and os.access(found, os.X_OK) else None


# Per module, not per session: Playwright's sync API keeps an event loop running on this thread
# while it is open, and later tests in the same worker run their own loops there.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium installed: `apt-get install chromium` (make test does it when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (requirements-dev.txt; make test installs it)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield launched
        launched.close()


class PageProblems:
    """What the page itself reported: uncaught errors, console errors (CSP violations included),
    failed requests. A test asserts there were none."""

    def __init__(self, page: Any):
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # An API answer of 4xx is logged by Chromium as a failed resource: expected in some tests.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {msg.text}")


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    context.set_default_timeout(15_000)
    pg = context.new_page()
    pg.problems = PageProblems(pg)
    yield pg
    context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
