"""Shared benchmark plumbing: start the fake upstream and the gateway as separate processes (so
the load generator never shares a GIL with what it measures), and summarize latencies."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MASTER = "qlk_live_" + "b" * 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def _server(argv: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """A server process on 127.0.0.1:`port`, up until the block exits; yields its URL."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url + "/health")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def serve_python(code: str) -> contextlib.AbstractContextManager[str]:
    """Run `code` (a uvicorn server; `{port}` is filled in) in its own process."""
    port = free_port()
    return _server([sys.executable, "-c", code.format(port=port)], port)


def fake_upstream() -> contextlib.AbstractContextManager[str]:
    return serve_python(
        "import uvicorn; from tests.fakes.fake_anthropic import FakeAnthropic; "
        "uvicorn.run(FakeAnthropic().app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )


def fake_openai_upstream() -> contextlib.AbstractContextManager[str]:
    """The fake OpenAI Chat Completions API; its clients' base URL is this URL + "/v1"."""
    return serve_python(
        "import uvicorn; from tests.fakes.fake_openai import FakeOpenAI; "
        "uvicorn.run(FakeOpenAI().app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )


@contextlib.contextmanager
def gateway(upstream: str, **env: str) -> Iterator[str]:
    """`python -m threadgate serve` in local mode on a throwaway data dir, against `upstream`."""
    from tests.fakes.fake_anthropic import FAKE_API_KEY

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        environ = {
            **os.environ,
            "THREADGATE_MODE": "local",
            "THREADGATE_DATA_DIR": data,
            "THREADGATE_PORT": str(port),
            "THREADGATE_MASTER_KEY": MASTER,
            "ANTHROPIC_API_KEY": FAKE_API_KEY,
            "ANTHROPIC_BASE_URL": upstream,
            "THREADGATE_LOCAL_MODEL_WORD_DELAY_MS": "0",
            "PYTHONPATH": str(ROOT / "layers" / "threadgate" / "python"),
            **env,
        }
        with _server([sys.executable, "-m", "threadgate", "serve"], port, environ) as url:
            yield url


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(ms, 50), 3), "p99_ms": round(pct(ms, 99), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def compared(direct_ms: list[float], gateway_ms: list[float]) -> dict[str, Any]:
    """Both summaries and what the gateway added (its percentile minus the direct one)."""
    d, g = summary(direct_ms), summary(gateway_ms)
    return {"direct": d, "gateway": g,
            "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3), "added_p99_ms": round(g["p99_ms"] - d["p99_ms"], 3)}


def machine() -> dict[str, str | int]:
    return {"python": platform.python_version(), "cpus": os.cpu_count() or 0, "platform": platform.platform()}


def write(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    print(json.dumps(data, indent=2))
