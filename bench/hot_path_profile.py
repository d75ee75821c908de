"""Where the gateway's CPU goes per request: CPU time per request and py-spy flame graphs for
`/v1/chat/completions` and a thread turn, under the same load as `bench/peer_bench.py`.

    .venv/bin/python bench/hot_path_profile.py [--requests 3000] [--no-flame]

CPU time per request (from /proc, the gateway process only) barely moves with other load on the
machine, unlike latency, so it is how a lever is judged while the machine is busy; the flame
graphs (bench/results/flame-<target>.svg) and the shares by layer (bench/results/profile.json)
say where the time goes. The flame graphs need py-spy (in requirements-dev: the venv's, or one on PATH).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import MASTER, RESULTS, ROOT, free_port  # noqa: E402
from bench.peer_bench import (  # noqa: E402
    Setup, chat_body, cpu_seconds, load_phase, process, tree, turn_body,
)

PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")

# Where a sampled stack's innermost interesting frame lives, by the start of its file path as
# py-spy prints it (site-packages and stdlib paths are shown from the package on); first match
# wins, so the more specific prefixes come first. The rest is "other".
LAYERS = [
    ("sqlite stores", ("threadgate/stores/sqlite/",)),
    ("search/embedding", ("threadgate/search/", "threadgate/background/search", "wordllama/", "numpy/",
                          "tokenizers/")),
    ("upstream client (aiohttp)", ("aiohttp/", "yarl/", "multidict/", "tenacity/")),
    ("upstream client (httpx/httpcore/h11)", ("httpx/", "httpcore/", "h11/", "httpx_sse/")),
    ("threadgate providers", ("threadgate/providers/",)),
    ("threadgate domain", ("threadgate/domain/",)),
    ("threadgate api", ("threadgate/api/",)),
    ("threadgate other", ("threadgate/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("fastapi/starlette", ("fastapi/", "starlette/")),
    ("anyio (threads, streams)", ("anyio/",)),
    ("uvicorn", ("uvicorn/", "httptools/")),
    ("asyncio/uvloop", ("asyncio/", "uvloop/")),
    ("json", ("json/", "orjson/")),
    ("ssl/socket/threads", ("ssl.py", "socket.py", "threading.py", "concurrent/", "selectors.py")),
]


def layer_of(stack: str) -> str:
    """The layer of the innermost frame of a collapsed stack that belongs to a known layer."""
    for frame in reversed(stack.split(";")):
        path = frame[frame.rfind("(") + 1:]
        for name, prefixes in LAYERS:
            if any(path.startswith(p) or "/" + p in path for p in prefixes):
                return name
    return "other"


def shares(collapsed: Path) -> dict[str, Any]:
    """Per layer (innermost frame) and the 30 frames with the most samples under them."""
    layers: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            layers[layer_of(stack)] += int(n)
            for frame in set(stack.split(";")):
                inclusive[frame] += int(n)
    total = sum(layers.values()) or 1
    return {"by_layer_pct": {name: round(100 * n / total, 1) for name, n in layers.most_common()},
            "top_inclusive_pct": {frame: round(100 * n / total, 1) for frame, n in inclusive.most_common(40)}}


def measure(name: str, url: str, pid: int, make: Callable[[int], list[list[Any]]], n: int,
            flame: bool, raw_dir: Path | None = None) -> dict[str, Any]:
    """CPU per request over `n` requests at 32 clients; then, with `flame`, the same again under
    py-spy. `make(k)` gives k fresh requests (a thread turn needs a new thread each time)."""
    load_phase(url, make(max(200, n // 10)), 32)  # warm-up
    pids = tree(pid)
    c0 = cpu_seconds(pids)
    res = load_phase(url, make(n), 32)
    out: dict[str, Any] = {"cpu_ms_per_request": round((cpu_seconds(pids) - c0) * 1000 / res["ok"], 3),
                           "req_per_s": round(res["ok"] / res["seconds"], 1), "errors": res["errors"]}
    if flame:
        collapsed = Path(tempfile.mkstemp(suffix=".txt")[1])
        svg = RESULTS / f"flame-{name}.svg"
        spy = [PY_SPY or "py-spy", "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
        rec = subprocess.Popen(spy + ["--format", "raw", "-o", str(collapsed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        flame_rec = subprocess.Popen(spy + ["--format", "flamegraph", "-o", str(svg)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        load_phase(url, make(n), 32)
        for p in (rec, flame_rec):
            p.send_signal(2)  # py-spy writes its output on SIGINT
            p.wait(60)
        out.update(shares(collapsed))
        if raw_dir is not None:
            shutil.move(collapsed, raw_dir / f"flame-{name}.txt")
        else:
            collapsed.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--no-flame", action="store_true")
    parser.add_argument("--only", choices=["chat", "turn"], help="one target")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks in this directory")
    args = parser.parse_args()
    flame = not args.no_flame and PY_SPY is not None
    up_port, tg_port = free_port(), free_port()
    up = f"http://127.0.0.1:{up_port}"
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory())
        stack.enter_context(process([sys.executable, "bench/lean_upstream.py", str(up_port)], up + "/health"))
        env = {**os.environ, "THREADGATE_MODE": "local", "THREADGATE_DATA_DIR": data, "THREADGATE_PORT": str(tg_port),
               "THREADGATE_MASTER_KEY": MASTER, "ANTHROPIC_API_KEY": "sk-ant-lean", "ANTHROPIC_BASE_URL": up,
               "OPENAI_API_KEY": "sk-lean", "OPENAI_BASE_URL": up + "/v1",
               "PYTHONPATH": str(ROOT / "layers" / "threadgate" / "python")}
        tg_url = f"http://127.0.0.1:{tg_port}"
        tg = stack.enter_context(process([sys.executable, "-m", "threadgate", "serve"], tg_url + "/health", env))
        s = Setup(tg_url, data)
        n = args.requests
        chat = json.dumps(chat_body(s.openai_model))
        turn = json.dumps(turn_body(s.anthropic_model))
        threads = iter(s.seed_threads(3 * n + max(200, n // 10)) if args.only != "chat" else [])
        makers = {
            "chat": lambda k: [["POST", "/v1/chat/completions", {"x-api-key": s.key}, chat]] * k,
            "turn": lambda k: [["POST", f"/v1/threads/{next(threads)}/messages", {"x-api-key": s.key}, turn]
                               for _ in range(k)],  # one turn per seeded thread: history stays at 20
        }
        for name, make in makers.items():
            if args.only in (None, name):
                results[name] = measure(name, tg_url, tg.pid, make, n, flame, args.raw)
                print(name, results[name], file=sys.stderr)
    if flame:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
