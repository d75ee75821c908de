"""One real OpenSearch node (scripts/opensearch/node.py) for the whole test session.

- The session's main process (the xdist controller, or pytest itself without xdist) makes a state
  directory and names it in THREADGATE_TEST_OPENSEARCH_DIR, which the workers inherit.
- As soon as a process has collected a test that uses the `opensearch_url` fixture, it launches the
  node in the background (once per session: a file lock), so the build and the JVM start overlap
  with the rest of the suite; those tests are moved to the end of the run for the same reason.
- `opensearch_url` waits for the node; it SKIPS (with the reason) where Java 17+ or Maven is absent
  and FAILS when they are present but the node does not start.
- At the end the main process stops the node (and the node follows the main process if it dies).
- THREADGATE_TEST_OPENSEARCH_URL=http://… uses a node you started yourself instead.

The terminal summary says how many tests ran against the real node, or why none did.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE_SCRIPT = ROOT / "scripts" / "opensearch" / "node.py"
_spec = importlib.util.spec_from_file_location("threadgate_test_opensearch_node", NODE_SCRIPT)
node = importlib.util.module_from_spec(_spec)  # a script (standard library only), not a package
_spec.loader.exec_module(node)  # type: ignore[union-attr]

STATE_DIR_VAR = "THREADGATE_TEST_OPENSEARCH_DIR"
EXTERNAL_URL_VAR = "THREADGATE_TEST_OPENSEARCH_URL"
MARK = "real_opensearch"
WAIT_S = 600  # a first build on a fresh machine (Maven download) plus a start on busy cores

# The main process's view of the session: its state directory and the outcomes of marked tests.
_session: dict[str, Any] = {"state": None, "counts": {}}


def _main_process(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def _state_dir() -> Path | None:
    value = os.environ.get(STATE_DIR_VAR)
    return Path(value) if value else None


def configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARK}: runs against the session's real OpenSearch node")
    if _main_process(config) and not os.environ.get(EXTERNAL_URL_VAR):
        state = Path(tempfile.mkdtemp(prefix="tg-opensearch-session-"))
        os.environ[STATE_DIR_VAR] = str(state)
        (state / "owner.pid").write_text(str(os.getpid()))
        _session["state"] = state


def _launch_once(state: Path) -> None:
    with open(state / "launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (state / "launcher.pid").exists():
            return
        owner = int((state / "owner.pid").read_text())
        launcher = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), "launch",
             "--state-dir", str(state), "--parent-pid", str(owner)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(state / "launcher.log", "wb"),
        )
        (state / "launcher.pid").write_text(str(launcher.pid))


def collection_modifyitems(items: list[pytest.Item]) -> None:
    uses = [item for item in items if "opensearch_url" in getattr(item, "fixturenames", ())]
    if not uses:
        return
    for item in uses:
        item.add_marker(MARK)
        # The first of them waits for the node (a build and a start on busy cores): that wait
        # must not count against the per-test timeout of pyproject.toml.
        item.add_marker(pytest.mark.timeout(WAIT_S + 120))
    # Run them last: the node starts while everything else runs.
    chosen = set(map(id, uses))
    items[:] = [item for item in items if id(item) not in chosen] + uses
    state = _state_dir()
    if state is not None and node.missing_tools() is None:
        _launch_once(state)


def wait_for_url() -> str:
    external = os.environ.get(EXTERNAL_URL_VAR)
    if external:
        return external.rstrip("/")
    reason = node.missing_tools()
    if reason:
        pytest.skip(f"no real OpenSearch node: {reason}")
    state = _state_dir()
    assert state is not None, f"{STATE_DIR_VAR} is not set: tests/conftest.py did not configure the session"
    _launch_once(state)  # a run that selected a single test may come here first
    deadline = time.monotonic() + WAIT_S
    while not (state / "state.json").exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the OpenSearch node did not start within {WAIT_S} s (see {state}/launcher.log)")
        time.sleep(0.2)
    result = json.loads((state / "state.json").read_text())
    if "error" in result:
        pytest.fail(f"the OpenSearch node did not start: {result['error']}", pytrace=False)
    return result["url"]


def logreport(report: pytest.TestReport) -> None:
    if MARK not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        counts = _session["counts"]
        counts[report.outcome] = counts.get(report.outcome, 0) + 1


def terminal_summary(config: pytest.Config, terminalreporter: Any) -> None:
    if not _main_process(config):
        return
    counts = _session["counts"]
    external = os.environ.get(EXTERNAL_URL_VAR)
    if not counts:
        return
    state = _session["state"]
    started = json.loads((state / "state.json").read_text()) if state and (state / "state.json").exists() else {}
    outcome = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    if external:
        where = f"against the node at {external} ({EXTERNAL_URL_VAR})"
    elif "url" in started:
        where = f"against a real {started['version']} node started by this session ({started['seconds']} s to green)"
    else:
        where = f"without a real OpenSearch node ({node.missing_tools() or started.get('error', 'not started')})"
    terminalreporter.write_sep("-", "OpenSearch")
    terminalreporter.write_line(f"search adapter tests {where}: {outcome}")


def unconfigure() -> None:
    state = _session["state"]
    if state is None:
        return
    launcher = state / "launcher.pid"
    if launcher.exists() and not (state / "state.json").exists():
        try:  # interrupted while building or starting: stop the launcher (the node follows us)
            os.kill(int(launcher.read_text()), 15)
        except (ProcessLookupError, ValueError):
            pass
    if (state / "state.json").exists():
        started = json.loads((state / "state.json").read_text())
        if "pid" in started:
            node.stop(started["pid"])
    shutil.rmtree(state, ignore_errors=True)
