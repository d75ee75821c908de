"""`make chat` (python -m examples.chat) as a reader runs it: it starts its own local gateway,
registers its tool, and serves the chat page; a sign-up gets a capped key and a first thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes.servers import bound_socket

ROOT = Path(__file__).resolve().parents[2]


def test_make_chat_starts_a_gateway_and_the_app_end_to_end(tmp_path):
    with bound_socket() as probe:
        port = probe.getsockname()[1]
    env = {**os.environ, "THREADGATE_LOCAL_MODEL_WORD_DELAY_MS": "0"}
    env.pop("THREADGATE_MASTER_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "examples.chat", "--port", str(port), "--data-dir", str(tmp_path),
                             "--cap-usd", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=30) as browser:
            page = browser.get("/")
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert browser.post("/api/signup", json={"username": "erin", "password": "long enough"}).status_code == 200
            me = browser.get("/api/me").json()
            threads = browser.get("/api/threads").json()["data"]
            turn = browser.post(f"/api/threads/{threads[0]['id']}/messages", json={"content": "hello there"})
        assert me["username"] == "erin" and me["key"]["cap_micros"] == 2_000_000 and me["key"]["end_user_id"] == "chat_erin"
        events = [json.loads(line[5:]) for line in turn.text.splitlines() if line.startswith("data:")]
        streamed = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta"
                           and e["delta"]["type"] == "text_delta")
        assert turn.status_code == 200 and streamed == "Echo: hello there" and events[-1]["type"] == "qlaud.done"
        master = (tmp_path / "master-key").read_text().strip()
        assert oct((tmp_path / "master-key").stat().st_mode & 0o777) == "0o600"
        assert master not in page.text + turn.text + str(me)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode in (0, -15)
